"""The facility registry and `noctis facility apply`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from typer.testing import CliRunner

from noctis.cli import app
from noctis.core.facilities import (
    FacilityConflict,
    FacilityNameTaken,
    apply_facility,
    disable_facility,
    ensure_default_facility,
    move_destination,
    resolve_caller,
)
from noctis.core.ingest import FacilityRef
from noctis.core.runtime import Runtime
from noctis.index.models import Facility
from noctis.specs.facility import FacilitySpec
from support.incoming import ingest_file


def _spec(*aes: dict[str, object]) -> FacilitySpec:
    return FacilitySpec.model_validate({"applicationEntities": list(aes)})


def test_a_registered_ae_is_admitted_only_from_its_networks(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        apply_facility(
            session,
            "st-mary",
            _spec(
                {"aeTitle": "CT1", "allowedCIDRs": ["10.1.0.0/16"], "services": ["store", "echo"]}
            ),
        )
    with runtime.sessions() as session:
        caller = resolve_caller(session, "CT1", "10.1.2.3")
        assert caller is not None and caller.facility_name == "st-mary"
        assert caller.services == {"store", "echo"}
        assert resolve_caller(session, "CT1", "10.2.0.1") is None
        assert resolve_caller(session, "UNKNOWN", "10.1.2.3") is None


def test_an_ae_without_cidrs_may_call_only_from_its_host(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        apply_facility(
            session, "clinic", _spec({"aeTitle": "US1", "host": "192.168.4.7", "port": 104})
        )
    with runtime.sessions() as session:
        assert resolve_caller(session, "US1", "192.168.4.7") is not None
        assert resolve_caller(session, "US1", "192.168.4.8") is None
        destination = move_destination(
            session, resolve_caller(session, "US1", "192.168.4.7").facility_id, "US1"
        )  # type: ignore[union-attr]
    assert destination is not None and (destination.host, destination.port) == ("192.168.4.7", 104)


def test_the_embedded_default_accepts_any_ae_from_loopback_only(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        ensure_default_facility(session)
        ensure_default_facility(session)  # idempotent
    with runtime.sessions() as session:
        assert resolve_caller(session, "ANYTHING", "127.0.0.1") is not None
        assert resolve_caller(session, "ANYTHING", "::1") is not None
        assert resolve_caller(session, "ANYTHING", "10.0.0.5") is None


def test_an_exact_registration_wins_over_the_default(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        ensure_default_facility(session)
        apply_facility(session, "lab", _spec({"aeTitle": "LAB1", "allowedCIDRs": ["10.9.0.0/16"]}))
    with runtime.sessions() as session:
        # LAB1 is registered elsewhere: loopback does not fall back to the default facility.
        assert resolve_caller(session, "LAB1", "127.0.0.1") is None
        lab = resolve_caller(session, "LAB1", "10.9.1.1")
        assert lab is not None and lab.facility_name == "lab"


def test_an_ae_title_belongs_to_one_facility(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        apply_facility(session, "north", _spec({"aeTitle": "SHARED"}))
    with pytest.raises(FacilityConflict, match="SHARED"), runtime.sessions.begin() as session:
        apply_facility(session, "south", _spec({"aeTitle": "SHARED"}))
    with runtime.sessions() as session:
        assert session.scalar(select(Facility).where(Facility.name == "south")) is None


def test_reapplying_replaces_the_aes_and_disabling_refuses_callers(runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        apply_facility(session, "north", _spec({"aeTitle": "OLD"}))
    with runtime.sessions.begin() as session:
        apply_facility(session, "north", _spec({"aeTitle": "NEW"}))
    with runtime.sessions() as session:
        assert resolve_caller(session, "OLD", "10.0.0.1") is None
        assert resolve_caller(session, "NEW", "10.0.0.1") is not None
    with runtime.sessions.begin() as session:
        assert disable_facility(session, "north")
    with runtime.sessions() as session:
        assert resolve_caller(session, "NEW", "10.0.0.1") is None


def test_a_name_belongs_to_one_namespace_until_its_facility_is_deleted(runtime: Runtime) -> None:
    """Two Facility resources named alike in two namespaces: the second is refused and the
    first's entry untouched; once the first is disabled (deleted), the second claims it."""
    with runtime.sessions.begin() as session:
        apply_facility(session, "radiology", _spec({"aeTitle": "A_CT"}), namespace="a")
    with (
        pytest.raises(FacilityNameTaken, match="namespace a") as refused,
        runtime.sessions.begin() as session,
    ):
        apply_facility(session, "radiology", _spec({"aeTitle": "B_CT"}), namespace="b")
    assert refused.value.owner == "a"
    with pytest.raises(FacilityNameTaken), runtime.sessions.begin() as session:
        disable_facility(session, "radiology", namespace="b")  # not b's to disable
    with runtime.sessions() as session:
        assert resolve_caller(session, "A_CT", "10.0.0.1") is not None
        assert resolve_caller(session, "B_CT", "10.0.0.1") is None
        row = session.scalar(select(Facility).where(Facility.name == "radiology"))
        assert row is not None and (row.namespace, row.enabled) == ("a", True)

    with runtime.sessions.begin() as session:
        assert disable_facility(session, "radiology", namespace="a")
    with runtime.sessions.begin() as session:
        apply_facility(session, "radiology", _spec({"aeTitle": "B_CT"}), namespace="b")
    with runtime.sessions() as session:
        assert resolve_caller(session, "A_CT", "10.0.0.1") is None
        assert resolve_caller(session, "B_CT", "10.0.0.1") is not None
        row = session.scalar(select(Facility).where(Facility.name == "radiology"))
        assert row is not None and (row.namespace, row.enabled) == ("b", True)


def test_an_entry_of_no_namespace_is_claimed_and_the_cli_keeps_the_owner(
    runtime: Runtime,
) -> None:
    with runtime.sessions.begin() as session:
        apply_facility(session, "north", _spec({"aeTitle": "N_CT"}))  # noctis facility apply
    with runtime.sessions.begin() as session:
        apply_facility(session, "north", _spec({"aeTitle": "N_CT"}), namespace="pacs")
    with runtime.sessions.begin() as session:
        apply_facility(session, "north", _spec({"aeTitle": "N_MR"}))
    with runtime.sessions() as session:
        row = session.scalar(select(Facility).where(Facility.name == "north"))
        assert row is not None and row.namespace == "pacs"


@pytest.mark.parametrize(
    "ae",
    [
        {"aeTitle": ""},
        {"aeTitle": "SEVENTEEN_CHARS__"},
        {"aeTitle": "BACK\\SLASH"},
        {"aeTitle": " LEADING"},
        {"aeTitle": "CT1", "port": 70000},
        {"aeTitle": "CT1", "allowedCIDRs": ["10.0.0.0/33"]},
        {"aeTitle": "CT1", "services": ["print"]},
    ],
)
def test_invalid_specs_are_refused(ae: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _spec(ae)


FACILITY_YAML = """
apiVersion: pacs.noctis.io/v1alpha1
kind: Facility
metadata:
  name: st-mary
spec:
  displayName: St Mary's
  applicationEntities:
    - aeTitle: CT_ROOM_1
      host: 10.20.0.15
      port: 104
      allowedCIDRs: [10.20.0.0/24]
---
apiVersion: pacs.noctis.io/v1alpha1
kind: Facility
metadata:
  name: north-clinic
spec:
  applicationEntities:
    - aeTitle: US_NORTH
"""


def _cli_env(tmp_path: Path) -> dict[str, str]:
    return {"NOCTIS_DATA_DIR": str(tmp_path), "NOCTIS_DATABASE_URL": f"sqlite:///{tmp_path}/i.db"}


def test_facility_apply_loads_every_document(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _cli_env(tmp_path)
    assert runner.invoke(app, ["migrate"], env=env).exit_code == 0
    spec = tmp_path / "facility.yaml"
    spec.write_text(FACILITY_YAML)

    result = runner.invoke(app, ["facility", "apply", "-f", str(spec)], env=env)
    assert result.exit_code == 0, result.output
    listing = runner.invoke(app, ["facility", "list"], env=env)
    assert "CT_ROOM_1" in listing.output and "US_NORTH" in listing.output


def test_facility_apply_reports_an_invalid_file_and_changes_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    env = _cli_env(tmp_path)
    runner.invoke(app, ["migrate"], env=env)
    spec = tmp_path / "facility.yaml"
    spec.write_text(FACILITY_YAML.replace("port: 104", "port: 104000"))

    result = runner.invoke(app, ["facility", "apply", "-f", str(spec)], env=env)
    assert result.exit_code == 2
    assert "port" in result.output
    listing = runner.invoke(app, ["facility", "list"], env=env)
    assert "US_NORTH" not in listing.output


def test_a_deleted_facilitys_studies_never_go_to_a_namesake_of_another_namespace(
    runtime: Runtime, make_dicom: Callable[..., Path]
) -> None:
    """A Facility deleted in namespace a leaves its studies under its name: b's Facility of
    the same name stays refused (it would read a's studies), a's own can come back."""
    with runtime.sessions.begin() as session:
        row = apply_facility(session, "oncology", _spec({"aeTitle": "A_PET"}), namespace="a")
        kept = FacilityRef(row.id, row.name)
    ingest_file(runtime, kept, make_dicom(PatientID="A-1"))
    with runtime.sessions.begin() as session:
        assert disable_facility(session, "oncology", namespace="a")
    with (
        pytest.raises(FacilityNameTaken, match="still holds the studies") as refused,
        runtime.sessions.begin() as session,
    ):
        apply_facility(session, "oncology", _spec({"aeTitle": "B_PET"}), namespace="b")
    assert refused.value.owner == "a"
    with runtime.sessions.begin() as session:
        apply_facility(session, "oncology", _spec({"aeTitle": "A_PET"}), namespace="a")
    with runtime.sessions() as session:
        assert resolve_caller(session, "A_PET", "10.0.0.1") is not None
        assert resolve_caller(session, "B_PET", "10.0.0.1") is None
