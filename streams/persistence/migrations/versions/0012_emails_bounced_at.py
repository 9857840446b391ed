"""emails.bounced_at: an email that bounced no longer counts as having emailed its
requests, so that those that go back to wait are in the next contact email

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("emails", sa.Column("bounced_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("emails") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("bounced_at")
