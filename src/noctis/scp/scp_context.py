"""What every DIMSE service needs, built once per SCP process and passed to each handler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from noctis.core.runtime import Runtime
from noctis.scp.access import AccessControl
from noctis.scp.audit import DimseAudit
from noctis.scp.commitment_reports import CommitmentReports


@dataclass(frozen=True)
class ScpContext:
    runtime: Runtime  # the archive's shared core: settings, index sessions, object store, queue
    access: AccessControl
    ae_title: str
    spool_dir: Path  # where received instances are spooled and retrieved objects staged
    audit: DimseAudit
    fast_path: bool  # the fast DIMSE path (noctis.scp.fast) or plain pynetdicom handlers
    commitment: CommitmentReports  # storage commitment results still to be reported

    @classmethod
    def create(cls, runtime: Runtime) -> ScpContext:
        settings = runtime.settings
        spool = settings.resolved_spool_dir()
        spool.mkdir(parents=True, exist_ok=True)
        audit = DimseAudit(runtime.audit)
        return cls(
            runtime=runtime,
            access=AccessControl(
                runtime,
                settings.ae_title,
                facilities=frozenset(settings.scp_facilities),
                audit=audit,
            ),
            ae_title=settings.ae_title.strip(),
            spool_dir=spool,
            audit=audit,
            fast_path=settings.scp_fast_path,
            commitment=CommitmentReports(runtime, settings.ae_title.strip()),
        )
