"""PostgreSQL: index one instance in one round trip (function noctis_write_instance)

The write path's index half (noctis.index.upsert.write_instance) as a PL/pgSQL function, so
that a store costs PostgreSQL one statement instead of eight round trips. It does what the
Python version does on SQLite, statement for statement: find or insert patient (the latest
demographics win), study, series and instance, then count them (the study's counters lock
its row, so writers of one study take turns from there and its ModalitiesInStudy stays exact
with several SCP processes). An instance already indexed raises: NX001 (same bytes; DETAIL is
its object key), NX002 (other bytes, replacing not allowed), NX003 (a replacement would move it
to another series); the raise rolls back everything the call wrote, as the Python version's
exceptions do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 03:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WRITE_INSTANCE = r"""
CREATE OR REPLACE FUNCTION noctis_write_instance(
    p_facility_id integer,
    p_patient_id varchar, p_patient_name varchar, p_patient_birth_date varchar,
    p_patient_sex varchar,
    p_study_instance_uid varchar, p_study_date varchar, p_study_time varchar,
    p_accession_number varchar, p_study_id varchar, p_study_description varchar,
    p_referring_physician_name varchar,
    p_series_instance_uid varchar, p_modality varchar, p_series_number integer,
    p_series_description varchar, p_body_part_examined varchar, p_series_date varchar,
    p_series_time varchar,
    p_sop_instance_uid varchar, p_sop_class_uid varchar, p_instance_number integer,
    p_transfer_syntax_uid varchar, p_rows integer, p_columns integer,
    p_number_of_frames integer, p_pixel_data_offset bigint,
    p_object_key varchar, p_size_bytes bigint, p_sha256 varchar,
    p_now timestamptz, p_replace boolean
) RETURNS TABLE (replaced_key varchar, series_instances integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_patient record;
    v_patient_pk integer;
    v_study_pk integer;
    v_study_is_new boolean := false;
    v_series_pk integer;
    v_series_is_new boolean := false;
    v_first_of_new_study boolean := false;
    v_instance_pk integer;
    v_existing record;
    v_count integer;
BEGIN
    SELECT id, patient_name, patient_birth_date, patient_sex INTO v_patient
    FROM patient WHERE facility_id = p_facility_id AND patient_id = p_patient_id;
    IF NOT FOUND THEN
        INSERT INTO patient (facility_id, patient_id, patient_name, patient_birth_date,
                             patient_sex)
        VALUES (p_facility_id, p_patient_id, p_patient_name, p_patient_birth_date,
                p_patient_sex)
        ON CONFLICT (facility_id, patient_id) DO NOTHING
        RETURNING id INTO v_patient_pk;
        IF v_patient_pk IS NULL THEN  -- a concurrent writer inserted it since our look-up
            SELECT id INTO STRICT v_patient_pk
            FROM patient WHERE facility_id = p_facility_id AND patient_id = p_patient_id;
        END IF;
    ELSE
        v_patient_pk := v_patient.id;
        IF (v_patient.patient_name, v_patient.patient_birth_date, v_patient.patient_sex)
           IS DISTINCT FROM (p_patient_name, p_patient_birth_date, p_patient_sex) THEN
            UPDATE patient SET patient_name = p_patient_name,
                               patient_birth_date = p_patient_birth_date,
                               patient_sex = p_patient_sex
            WHERE id = v_patient_pk;
        END IF;
    END IF;

    SELECT id INTO v_study_pk
    FROM study WHERE facility_id = p_facility_id AND study_instance_uid = p_study_instance_uid;
    IF NOT FOUND THEN
        INSERT INTO study (facility_id, patient_pk, study_instance_uid, study_date, study_time,
                           accession_number, study_id, study_description,
                           referring_physician_name, modalities_in_study, number_of_series,
                           number_of_instances, size_bytes, created_at, updated_at)
        VALUES (p_facility_id, v_patient_pk, p_study_instance_uid, p_study_date, p_study_time,
                p_accession_number, p_study_id, p_study_description,
                p_referring_physician_name, '', 0, 0, 0, p_now, p_now)
        ON CONFLICT (facility_id, study_instance_uid) DO NOTHING
        RETURNING id INTO v_study_pk;
        IF v_study_pk IS NULL THEN
            SELECT id INTO STRICT v_study_pk FROM study
            WHERE facility_id = p_facility_id AND study_instance_uid = p_study_instance_uid;
        ELSE
            v_study_is_new := true;
        END IF;
    END IF;

    IF v_study_is_new THEN
        -- A new study's series is new too (unless the sender reused its UID in another
        -- study): inserted with its first instance counted.
        INSERT INTO series (facility_id, study_pk, series_instance_uid, modality, series_number,
                            series_description, body_part_examined, series_date, series_time,
                            number_of_instances, created_at, updated_at)
        VALUES (p_facility_id, v_study_pk, p_series_instance_uid, p_modality, p_series_number,
                p_series_description, p_body_part_examined, p_series_date, p_series_time,
                1, p_now, p_now)
        ON CONFLICT (facility_id, series_instance_uid) DO NOTHING
        RETURNING id INTO v_series_pk;
        v_first_of_new_study := v_series_pk IS NOT NULL;
    END IF;
    IF v_series_pk IS NULL THEN
        SELECT id INTO v_series_pk FROM series
        WHERE facility_id = p_facility_id AND series_instance_uid = p_series_instance_uid;
        IF NOT FOUND THEN
            INSERT INTO series (facility_id, study_pk, series_instance_uid, modality,
                                series_number, series_description, body_part_examined,
                                series_date, series_time, number_of_instances, created_at,
                                updated_at)
            VALUES (p_facility_id, v_study_pk, p_series_instance_uid, p_modality,
                    p_series_number, p_series_description, p_body_part_examined,
                    p_series_date, p_series_time, 0, p_now, p_now)
            ON CONFLICT (facility_id, series_instance_uid) DO NOTHING
            RETURNING id INTO v_series_pk;
            IF v_series_pk IS NULL THEN
                SELECT id INTO STRICT v_series_pk FROM series
                WHERE facility_id = p_facility_id
                  AND series_instance_uid = p_series_instance_uid;
            ELSE
                v_series_is_new := true;
            END IF;
        END IF;
    END IF;

    INSERT INTO instance (facility_id, series_pk, sop_instance_uid, sop_class_uid,
                          instance_number, transfer_syntax_uid, rows, columns,
                          number_of_frames, pixel_data_offset, object_key, size_bytes, sha256,
                          created_at)
    VALUES (p_facility_id, v_series_pk, p_sop_instance_uid, p_sop_class_uid,
            p_instance_number, p_transfer_syntax_uid, p_rows, p_columns,
            p_number_of_frames, p_pixel_data_offset, p_object_key, p_size_bytes, p_sha256,
            p_now)
    ON CONFLICT (facility_id, sop_instance_uid) DO NOTHING
    RETURNING id INTO v_instance_pk;

    IF v_instance_pk IS NULL THEN  -- already indexed: a duplicate or a replacement
        SELECT id, sha256, object_key, size_bytes, series_pk INTO v_existing
        FROM instance
        WHERE facility_id = p_facility_id AND sop_instance_uid = p_sop_instance_uid;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'instance row vanished between a conflicting insert and its look-up';
        END IF;
        IF v_existing.sha256 = p_sha256 THEN
            RAISE EXCEPTION USING ERRCODE = 'NX001', MESSAGE = 'same content',
                                  DETAIL = v_existing.object_key;
        END IF;
        IF NOT p_replace THEN
            RAISE EXCEPTION USING ERRCODE = 'NX002', MESSAGE = 'different content';
        END IF;
        IF v_existing.series_pk <> v_series_pk THEN
            RAISE EXCEPTION USING ERRCODE = 'NX003', MESSAGE = 'moved to another series';
        END IF;
        UPDATE instance SET series_pk = v_series_pk, sop_class_uid = p_sop_class_uid,
                            instance_number = p_instance_number,
                            transfer_syntax_uid = p_transfer_syntax_uid, rows = p_rows,
                            columns = p_columns, number_of_frames = p_number_of_frames,
                            pixel_data_offset = p_pixel_data_offset,
                            object_key = p_object_key, size_bytes = p_size_bytes,
                            sha256 = p_sha256, created_at = p_now
        WHERE id = v_existing.id;
        UPDATE study SET size_bytes = size_bytes + p_size_bytes - v_existing.size_bytes
        WHERE id = v_study_pk;
        RETURN QUERY SELECT v_existing.object_key::varchar, NULL::integer;
        RETURN;
    END IF;

    IF v_first_of_new_study THEN
        UPDATE study SET number_of_instances = 1, number_of_series = 1,
                         size_bytes = p_size_bytes, modalities_in_study = p_modality
        WHERE id = v_study_pk;
        RETURN QUERY SELECT NULL::varchar, 1;
        RETURN;
    END IF;

    UPDATE series SET number_of_instances = number_of_instances + 1, updated_at = p_now
    WHERE id = v_series_pk
    RETURNING number_of_instances INTO v_count;
    -- This locks the study row until the commit: writers of one study take turns from here,
    -- so the ModalitiesInStudy statement below, with a snapshot of its own, sees every series
    -- a writer before it committed.
    UPDATE study SET number_of_instances = number_of_instances + 1,
                     size_bytes = size_bytes + p_size_bytes,
                     number_of_series = number_of_series
                                        + CASE WHEN v_series_is_new THEN 1 ELSE 0 END,
                     updated_at = p_now
    WHERE id = v_study_pk;
    IF v_series_is_new THEN
        UPDATE study SET modalities_in_study = CASE WHEN v_study_is_new THEN p_modality ELSE
            coalesce((SELECT string_agg(m, chr(92) ORDER BY m COLLATE "C")
                      FROM (SELECT DISTINCT modality AS m FROM series
                            WHERE study_pk = v_study_pk AND modality <> '') AS found), '')
            END
        WHERE id = v_study_pk;
    END IF;
    RETURN QUERY SELECT NULL::varchar, v_count;
END;
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(WRITE_INSTANCE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS noctis_write_instance")
