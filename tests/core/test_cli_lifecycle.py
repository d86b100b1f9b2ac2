"""`noctis delete`, `noctis hold` and `noctis check consistency` on the archive the settings
name: embedded (SQLite + files) and production (PostgreSQL + S3)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from noctis.cli import app
from noctis.core.runtime import Runtime
from noctis.settings import Settings
from support.archive import index_counts, open_runtime, register_facility, stored_object_keys
from support.dicomdata import small_ct
from support.incoming import ingest_file


@pytest.fixture(params=["embedded", "production"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Runtime, dict]]:
    """A migrated archive and the environment that makes the CLI open the same one."""
    env = {"NOCTIS_DATA_DIR": str(tmp_path), "NOCTIS_ORPHAN_GRACE_SECONDS": "0.001"}
    if request.param == "production":
        server = request.getfixturevalue("s3_server")
        store = request.getfixturevalue("s3_store")
        env |= {
            "NOCTIS_MODE": "production",
            "NOCTIS_DATABASE_URL": request.getfixturevalue("pg_url"),
            "NOCTIS_STORAGE_BACKEND": "s3",
            "NOCTIS_S3_ENDPOINT": server.endpoint,
            "NOCTIS_S3_BUCKET": store.bucket,
            "NOCTIS_S3_ACCESS_KEY": server.access_key,
            "NOCTIS_S3_SECRET_KEY": server.secret_key,
            "NOCTIS_S3_SECURE": "false",
        }
    else:
        env |= {"NOCTIS_DATABASE_URL": f"sqlite:///{tmp_path / 'index.sqlite3'}"}
    settings = Settings(
        **{k.removeprefix("NOCTIS_").lower(): v for k, v in env.items()}  # type: ignore[arg-type]
    )
    runtime = open_runtime(settings)
    yield runtime, env
    runtime.close()


def test_delete_hold_and_check_from_the_command_line(archive, tmp_path: Path) -> None:
    runtime, env = archive
    facility = register_facility(runtime, "north")
    study, series = generate_uid(), generate_uid()
    for number in range(3):
        path = tmp_path / f"{number}.dcm"
        small_ct(StudyInstanceUID=study, SeriesInstanceUID=series, InstanceNumber=number).save_as(
            path, enforce_file_format=True
        )
        ingest_file(runtime, facility, path)
    runner = CliRunner()

    def noctis(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args), env=env)
        return result.exit_code, " ".join(result.output.split())

    assert noctis("hold", "set", study, "--reason", "subpoena 12") == (
        0,
        f"study {study} (north) is on legal hold: subpoena 12",
    )
    code, output = noctis("delete", "study", study)
    assert code == 3 and "legal hold" in output and "subpoena 12" in output
    assert index_counts(runtime)["instance"] == 3
    code, output = noctis("hold", "show", study)
    assert code == 0 and "subpoena 12" in output
    assert noctis("hold", "clear", study)[0] == 0

    code, output = noctis("delete", "study", study)
    assert code == 0, output
    assert f"deleted study {study}: 3 instance(s)" in output
    assert index_counts(runtime)["instance"] == 0
    assert stored_object_keys(runtime.store) == set()  # swept before the command returned
    assert noctis("delete", "study", study) == (1, f"study {study} not found")

    orphan = f"north/{study}/{series}/1.2.3.4.0123456789abcdef.dcm"
    runtime.store.put(orphan, io.BytesIO(b"DICM"), 4)
    code, output = noctis("check", "consistency")
    assert code == 0 and "1 orphan object(s) removed" in output
    assert not runtime.store.exists(orphan)
