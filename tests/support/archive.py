"""Archives for tests, in the two configurations Noctis runs in.

- embedded: SQLite file + filesystem object store, everything under the test's tmp dir;
- production: PostgreSQL (a database of the test's own) + S3 (a bucket of the test's own).

Both are migrated and start with no facility: tests register the facilities they need with
`register_facility` (embedded mode's loopback "default" facility is added only on request).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import func, select, update

from noctis.core.facilities import apply_facility, ensure_default_facility
from noctis.core.ingest import FacilityRef
from noctis.core.queue import NullQueue
from noctis.core.runtime import Runtime
from noctis.index.migrate import upgrade
from noctis.index.models import Instance, Patient, Series, Study
from noctis.settings import Settings
from noctis.specs.facility import FacilitySpec
from noctis.storage import ObjectStore
from noctis.storage.filesystem import FilesystemStore
from noctis.storage.s3 import S3Store

LOOPBACK_CIDRS = ["127.0.0.0/8"]


def embedded_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Embedded-mode settings with everything under ``tmp_path``; ``overrides`` win."""
    defaults: dict[str, Any] = {
        "mode": "embedded",
        "data_dir": tmp_path,
        "database_url": f"sqlite:///{tmp_path / 'index.sqlite3'}",
        "storage_backend": "filesystem",
        "storage_path": tmp_path / "objects",
        "spool_dir": tmp_path / "spool",
    }
    return Settings(**(defaults | overrides))


def production_settings(
    tmp_path: Path,
    pg_url: str,
    *,
    s3_endpoint: str,
    s3_bucket: str,
    s3_access_key: str,
    s3_secret_key: str,
    **overrides: Any,
) -> Settings:
    return Settings(
        mode="production",
        data_dir=tmp_path,
        database_url=pg_url,
        storage_backend="s3",
        s3_endpoint=s3_endpoint,
        s3_bucket=s3_bucket,
        s3_access_key=s3_access_key,
        s3_secret_key=s3_secret_key,
        s3_secure=False,
        spool_dir=tmp_path / "spool",
        **overrides,
    )


def open_runtime(
    settings: Settings, *, store: ObjectStore | None = None, default_facility: bool = False
) -> Runtime:
    """The runtime on a migrated index for ``settings`` (``store`` replaces the one settings
    name); ``default_facility`` also makes sure the default facility exists."""
    upgrade(settings.resolved_database_url())
    runtime = Runtime.open(settings, queue=NullQueue())
    if store is not None:
        runtime.store = store
    if default_facility:
        with runtime.sessions.begin() as session:
            ensure_default_facility(session)
    return runtime


def register_facility(
    runtime: Runtime, name: str, aes: Iterable[Mapping[str, Any]] = ()
) -> FacilityRef:
    """Create or update facility ``name`` with these AEs (the CR's camelCase keys).

    An AE given without ``allowedCIDRs`` may call from loopback, where tests run.
    """
    entities = []
    for ae in aes:
        entry = dict(ae)
        entry.setdefault("allowedCIDRs", list(LOOPBACK_CIDRS))
        entities.append(entry)
    spec = FacilitySpec.model_validate({"displayName": name, "applicationEntities": entities})
    with runtime.sessions.begin() as session:
        facility = apply_facility(session, name, spec)
        return FacilityRef(facility.id, facility.name)


def index_counts(runtime: Runtime) -> dict[str, int]:
    """Rows per index table: what a refused store must not leave behind."""
    with runtime.sessions() as session:
        return {
            model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (Patient, Study, Series, Instance)
        }


def indexed_objects(runtime: Runtime) -> dict[str, str]:
    """SOP Instance UID -> object key, for every indexed instance."""
    with runtime.sessions() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.object_key))
        return {uid: key for uid, key in rows}


def stored_object_keys(store: ObjectStore) -> set[str]:
    """Every object in the store, to find orphans (objects the index does not know)."""
    if isinstance(store, FilesystemStore):
        return {
            path.relative_to(store.root).as_posix()
            for path in store.root.rglob("*")
            if path.is_file()
        }
    if isinstance(store, S3Store):
        return {
            str(item.object_name)
            for item in store.client.list_objects(store.bucket, recursive=True)
            if item.object_name
        }
    raise TypeError(f"cannot list {store!r}")


def point_instance_at(runtime: Runtime, sop_uid: str, data: bytes, **row: Any) -> str:
    """Put ``data`` in the store under a new key and point the instance's index row at it, as
    an object stored before today's ingest checks (or damaged since) would be: ``row`` sets
    other columns (``size_bytes`` defaults to the data's length). Returns the key."""
    key = f"replaced/{generate_uid()}"
    runtime.store.put(key, io.BytesIO(data), len(data))
    with runtime.sessions.begin() as session:
        session.execute(
            update(Instance)
            .where(Instance.sop_instance_uid == sop_uid)
            .values(object_key=key, **{"size_bytes": len(data), **row})
        )
    return key
