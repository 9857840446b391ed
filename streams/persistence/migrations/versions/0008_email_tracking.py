"""opt-in opens and clicks per email (issue 17)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "email_opens",
        sa.Column("email_id", BIGID, autoincrement=False, nullable=False),
        sa.Column("first_opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("open_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["email_id"], ["emails.id"], name=op.f("fk_email_opens_email_id_emails"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("email_id", name=op.f("pk_email_opens")),
    )
    op.create_table(
        "email_link_clicks",
        sa.Column("email_id", BIGID, autoincrement=False, nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("first_clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("click_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["email_id"], ["emails.id"], name=op.f("fk_email_link_clicks_email_id_emails"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("email_id", "position", name=op.f("pk_email_link_clicks")),
    )


def downgrade() -> None:
    op.drop_table("email_link_clicks")
    op.drop_table("email_opens")
