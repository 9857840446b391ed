"""emails: an index for the read API's listing, newest first by (created_at, id)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_emails_created", "emails", ["created_at", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_emails_created", table_name="emails")
