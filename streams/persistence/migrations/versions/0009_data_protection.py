"""erasure and retention of patient data (issue 18): when each email, batch entry,
call and call entry lost its content, and an index for the retention job

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TABLES = ("emails", "email_batches", "phone_calls", "phone_call_batches")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_emails_retention", "emails", ["redacted_at", "status", "sent_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_emails_retention", table_name="emails")
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:  # SQLite drops a column by copying the table
            batch.drop_column("redacted_at")
