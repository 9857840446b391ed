"""phone calls, their batches, the therapist directory mirror, job runs, email follow-up

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STATUSES = ("scheduled", "completed", "no_answer", "busy", "wrong_number", "cancelled")


def upgrade() -> None:
    with op.batch_alter_table("emails") as batch:
        batch.add_column(sa.Column("follow_up_done_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_emails_follow_up", ["kind", "status", "follow_up_done_at", "sent_at"])
    op.create_table(
        "therapist_directory",
        sa.Column("therapist_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("email", sa.String(255)),
        sa.Column("first_name", sa.String(255)),
        sa.Column("last_name", sa.String(255)),
        sa.Column("title", sa.String(64)),
        sa.Column("salutation", sa.String(64)),
        sa.Column("phone", sa.String(64)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("availability", JSON, nullable=False),
        sa.Column("contact_blocked", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("therapist_id", name=op.f("pk_therapist_directory")),
    )
    op.create_table(
        "phone_calls",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("call_key", sa.String(64), nullable=False),
        sa.Column("therapist_id", sa.Integer(), nullable=False),
        sa.Column("email_id", BIGID, nullable=True),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("status", sa.Enum(*STATUSES, name="callstatus", native_enum=False, length=32,
                                    create_constraint=True), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("notes", sa.Text()),
        sa.Column("outcome_notes", sa.Text()),
        sa.Column("reminder_sent_for", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_reason", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(["email_id"], ["emails.id"], name=op.f("fk_phone_calls_email_id_emails"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phone_calls")),
        sa.UniqueConstraint("call_key", name=op.f("uq_phone_calls_call_key")),
    )
    op.create_index("ix_phone_calls_therapist_id", "phone_calls", ["therapist_id"])
    op.create_index("ix_phone_calls_due", "phone_calls", ["status", "scheduled_at"])
    op.create_table(
        "phone_call_batches",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("phone_call_id", BIGID, nullable=False),
        sa.Column("placement_request_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(32)),
        sa.Column("notes", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(["phone_call_id"], ["phone_calls.id"],
                                name=op.f("fk_phone_call_batches_phone_call_id_phone_calls"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phone_call_batches")),
        sa.UniqueConstraint("phone_call_id", "placement_request_id", name=op.f("uq_phone_call_batches_phone_call_id")),
    )
    op.create_index("ix_phone_call_batches_phone_call_id", "phone_call_batches", ["phone_call_id"])
    op.create_index("ix_phone_call_batches_placement_request_id", "phone_call_batches", ["placement_request_id"])
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "run_at", name=op.f("pk_job_runs")),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_table("phone_call_batches")
    op.drop_table("phone_calls")
    op.drop_table("therapist_directory")
    with op.batch_alter_table("emails") as batch:
        batch.drop_index("ix_emails_follow_up")
        batch.drop_column("follow_up_done_at")
