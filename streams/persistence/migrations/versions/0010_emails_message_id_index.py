"""emails: an index on message_id, by which communication.record_bounce finds the email

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_emails_message_id", "emails", ["message_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_emails_message_id", table_name="emails")
