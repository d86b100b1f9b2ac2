"""reports: templates, snippets, each study's report and its signed versions, attachments

``report_template`` / ``report_snippet``: text to write reports from, per facility or global.
``report``: one per study (its state and the draft being written). ``report_version``: every
signed version, immutable (text, signer, time, SHA-256 of the text, the SOP Instance UIDs of
its Encapsulated PDF and Basic Text SR). ``study_attachment``: PDFs attached to a study
(stored in it as Encapsulated PDF).

Revision ID: 0014
Revises: 0017 (written against 0012: chained after the results part's 0017 on main)
Create Date: 2026-12-07 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_snippet",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_report_snippet_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_snippet")),
    )
    op.create_index("ix_report_snippet_facility", "report_snippet", ["facility_id"])

    op.create_table(
        "report_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("body_part", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_report_template_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_template")),
    )
    op.create_index("ix_report_template_facility", "report_template", ["facility_id"])

    op.create_table(
        "report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("draft_text", sa.Text(), nullable=True),
        sa.Column("draft_author", sa.String(length=255), nullable=True),
        sa.Column("draft_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("pdf_series_uid", sa.String(length=64), nullable=False),
        sa.Column("sr_series_uid", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_report_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["study.id"], name=op.f("fk_report_study_pk_study"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["report_template.id"],
            name=op.f("fk_report_template_id_report_template"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report")),
        sa.UniqueConstraint("study_pk", name=op.f("uq_report_study_pk")),
    )
    op.create_table(
        "study_attachment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_by", sa.String(length=255), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["facility.id"],
            name=op.f("fk_study_attachment_facility_id_facility"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.id"],
            name=op.f("fk_study_attachment_study_pk_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_attachment")),
    )
    op.create_index("ix_study_attachment_study", "study_attachment", ["study_pk"])

    op.create_table(
        "report_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("signed_by", sa.String(length=255), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pdf_sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sr_sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("header", sa.JSON(), nullable=False),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=True),
        sa.Column("documents_stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["report.id"],
            name=op.f("fk_report_version_report_id_report"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_version")),
        sa.UniqueConstraint("report_id", "number", name="uq_report_version_number"),
    )
    op.create_index("ix_report_version_pending", "report_version", ["documents_stored_at"])
    op.create_index("ix_report_version_sr", "report_version", ["sr_sop_instance_uid"])


def downgrade() -> None:
    op.drop_table("report_version")
    op.drop_table("study_attachment")
    op.drop_table("report")
    op.drop_table("report_template")
    op.drop_table("report_snippet")
