"""waiting_requests: patient details of requests waiting for their email, out of the table

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "waiting_requests",
        sa.Column("placement_request_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("therapist_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "patient",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("placement_request_id", name=op.f("pk_waiting_requests")),
    )
    op.create_index(op.f("ix_waiting_requests_therapist_id"), "waiting_requests", ["therapist_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_waiting_requests_therapist_id"), table_name="waiting_requests")
    op.drop_table("waiting_requests")
