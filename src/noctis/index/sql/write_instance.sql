-- noctis_write_instance: the index write on PostgreSQL, in one round trip.
--
-- Loaded by migration 0007 (CREATE OR REPLACE: loading it again is harmless), called by
-- noctis.index.postgresql. It does what noctis.index.sqlite_write does on SQLite, statement
-- for statement: find or insert patient, study, series and instance, then count them (the
-- study's counters lock its row, so writers of one study take turns from there and its
-- ModalitiesInStudy stays exact with several SCP processes). It files an instance only under
-- the study its series already belongs to and a study only under the patient it was filed
-- under, never rewrites stored demographics, and returns the stored ones when they differ
-- from the instance's. A refusal raises, and rolls back everything the call wrote:
--   NX001  the instance is indexed with the same data set (DETAIL is its object key)
--   NX002  it is indexed with another data set and p_replace is false
--   NX003  a replacement would move it to another series
--   NX004  its series is filed under another study (DETAIL is that study's UID)
--   NX005  its study is filed under another (PatientID, IssuerOfPatientID)
CREATE OR REPLACE FUNCTION noctis_write_instance(
    p_facility_id integer,
    p_patient_id varchar, p_issuer_of_patient_id varchar, p_patient_name varchar,
    p_patient_birth_date varchar, p_patient_sex varchar,
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
) RETURNS TABLE (replaced_key varchar, series_instances integer, conflict_with varchar,
                 stored_patient_name varchar, stored_patient_birth_date varchar,
                 stored_patient_sex varchar)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_found record;
    v_patient_pk integer;
    v_patient_inserted boolean := false;
    v_study_pk integer;
    v_study_is_new boolean := false;
    v_series_pk integer;
    v_series_is_new boolean := false;
    v_instance_pk integer;
    v_existing record;
    v_count integer;
    v_conflict_with varchar;
    v_name varchar;
    v_birth varchar;
    v_sex varchar;
BEGIN
    -- The usual case, another instance of a known series: the series and the study it is
    -- filed under in one look-up.
    SELECT se.id, se.study_pk, st.study_instance_uid, st.patient_id, st.issuer_of_patient_id,
           st.patient_name, st.patient_birth_date, st.patient_sex INTO v_found
    FROM series se JOIN study st ON st.id = se.study_pk
    WHERE se.facility_id = p_facility_id AND se.series_instance_uid = p_series_instance_uid;
    IF FOUND THEN
        IF v_found.study_instance_uid <> p_study_instance_uid THEN
            RAISE EXCEPTION USING ERRCODE = 'NX004', MESSAGE = 'series of another study',
                                  DETAIL = v_found.study_instance_uid;
        END IF;
        v_series_pk := v_found.id;
        v_study_pk := v_found.study_pk;
    ELSE
        SELECT id, study_instance_uid, patient_id, issuer_of_patient_id, patient_name,
               patient_birth_date, patient_sex INTO v_found
        FROM study
        WHERE facility_id = p_facility_id AND study_instance_uid = p_study_instance_uid;
        IF FOUND THEN
            v_study_pk := v_found.id;
        ELSE
            IF p_patient_id <> '' THEN
                SELECT id, patient_name, patient_birth_date, patient_sex INTO v_found
                FROM patient
                WHERE facility_id = p_facility_id AND patient_id = p_patient_id
                  AND issuer_of_patient_id = p_issuer_of_patient_id;
                IF FOUND THEN
                    v_patient_pk := v_found.id;
                END IF;
            END IF;
            IF v_patient_pk IS NULL THEN
                INSERT INTO patient (facility_id, patient_id, issuer_of_patient_id,
                                     patient_name, patient_birth_date, patient_sex)
                VALUES (p_facility_id, p_patient_id, p_issuer_of_patient_id, p_patient_name,
                        p_patient_birth_date, p_patient_sex)
                ON CONFLICT (facility_id, patient_id, issuer_of_patient_id)
                    WHERE patient_id <> '' DO NOTHING
                RETURNING id INTO v_patient_pk;
                IF v_patient_pk IS NULL THEN  -- a concurrent writer inserted it
                    SELECT id, patient_name, patient_birth_date, patient_sex INTO STRICT v_found
                    FROM patient
                    WHERE facility_id = p_facility_id AND patient_id = p_patient_id
                      AND issuer_of_patient_id = p_issuer_of_patient_id;
                    v_patient_pk := v_found.id;
                ELSE
                    v_patient_inserted := true;
                END IF;
            END IF;
            IF NOT v_patient_inserted AND
               (v_found.patient_name, v_found.patient_birth_date, v_found.patient_sex)
               IS DISTINCT FROM (p_patient_name, p_patient_birth_date, p_patient_sex) THEN
                v_conflict_with := 'patient';
                v_name := v_found.patient_name;
                v_birth := v_found.patient_birth_date;
                v_sex := v_found.patient_sex;
            END IF;
            INSERT INTO study (facility_id, patient_pk, patient_id, issuer_of_patient_id,
                               patient_name, patient_birth_date, patient_sex,
                               study_instance_uid, study_date, study_time, accession_number,
                               study_id, study_description, referring_physician_name,
                               modalities_in_study, number_of_series, number_of_instances,
                               size_bytes, created_at, updated_at)
            VALUES (p_facility_id, v_patient_pk, p_patient_id, p_issuer_of_patient_id,
                    p_patient_name, p_patient_birth_date, p_patient_sex,
                    p_study_instance_uid, p_study_date, p_study_time, p_accession_number,
                    p_study_id, p_study_description, p_referring_physician_name,
                    '', 0, 0, 0, p_now, p_now)
            ON CONFLICT (facility_id, study_instance_uid) DO NOTHING
            RETURNING id INTO v_study_pk;
            IF v_study_pk IS NULL THEN  -- a concurrent writer inserted the study
                IF v_patient_inserted THEN  -- no study needs the patient made for it
                    DELETE FROM patient WHERE id = v_patient_pk;
                END IF;
                v_conflict_with := NULL;
                SELECT id, study_instance_uid, patient_id, issuer_of_patient_id, patient_name,
                       patient_birth_date, patient_sex INTO STRICT v_found
                FROM study
                WHERE facility_id = p_facility_id
                  AND study_instance_uid = p_study_instance_uid;
                v_study_pk := v_found.id;
            ELSE
                v_study_is_new := true;
            END IF;
        END IF;
        -- A new series, inserted with its first instance counted.
        INSERT INTO series (facility_id, study_pk, series_instance_uid, modality, series_number,
                            series_description, body_part_examined, series_date, series_time,
                            number_of_instances, created_at, updated_at)
        VALUES (p_facility_id, v_study_pk, p_series_instance_uid, p_modality, p_series_number,
                p_series_description, p_body_part_examined, p_series_date, p_series_time,
                1, p_now, p_now)
        ON CONFLICT (facility_id, series_instance_uid) DO NOTHING
        RETURNING id INTO v_series_pk;
        IF v_series_pk IS NULL THEN  -- a concurrent writer inserted the series
            SELECT se.id, se.study_pk, st.study_instance_uid INTO STRICT v_existing
            FROM series se JOIN study st ON st.id = se.study_pk
            WHERE se.facility_id = p_facility_id
              AND se.series_instance_uid = p_series_instance_uid;
            IF v_existing.study_pk <> v_study_pk THEN
                RAISE EXCEPTION USING ERRCODE = 'NX004', MESSAGE = 'series of another study',
                                      DETAIL = v_existing.study_instance_uid;
            END IF;
            v_series_pk := v_existing.id;
        ELSE
            v_series_is_new := true;
        END IF;
    END IF;

    IF NOT v_study_is_new THEN
        -- v_found holds the study's patient attributes: the study stays with its patient,
        -- and keeps the demographics it arrived with.
        IF (v_found.patient_id, v_found.issuer_of_patient_id)
           IS DISTINCT FROM (p_patient_id, p_issuer_of_patient_id) THEN
            RAISE EXCEPTION USING ERRCODE = 'NX005', MESSAGE = 'study of another patient';
        END IF;
        IF (v_found.patient_name, v_found.patient_birth_date, v_found.patient_sex)
           IS DISTINCT FROM (p_patient_name, p_patient_birth_date, p_patient_sex) THEN
            v_conflict_with := 'study';
            v_name := v_found.patient_name;
            v_birth := v_found.patient_birth_date;
            v_sex := v_found.patient_sex;
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
        RETURN QUERY SELECT v_existing.object_key::varchar, NULL::integer, v_conflict_with,
                            v_name, v_birth, v_sex;
        RETURN;
    END IF;

    IF v_study_is_new AND v_series_is_new THEN
        UPDATE study SET number_of_instances = 1, number_of_series = 1,
                         size_bytes = p_size_bytes, modalities_in_study = p_modality
        WHERE id = v_study_pk;
        RETURN QUERY SELECT NULL::varchar, 1, v_conflict_with, v_name, v_birth, v_sex;
        RETURN;
    END IF;

    IF v_series_is_new THEN
        v_count := 1;  -- counted when inserted
    ELSE
        UPDATE series SET number_of_instances = number_of_instances + 1, updated_at = p_now
        WHERE id = v_series_pk
        RETURNING number_of_instances INTO v_count;
    END IF;
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
        UPDATE study SET modalities_in_study =
            coalesce((SELECT string_agg(m, chr(92) ORDER BY m COLLATE "C")
                      FROM (SELECT DISTINCT modality AS m FROM series
                            WHERE study_pk = v_study_pk AND modality <> '') AS found), '')
        WHERE id = v_study_pk;
    END IF;
    RETURN QUERY SELECT NULL::varchar, v_count, v_conflict_with, v_name, v_birth, v_sex;
END;
$$
