"""Analysis results sent over C-STORE by a registered AE (dcmtk storescu): found by the
results scan, linked to their study, with the sending AE named."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from scp_support import AE_TITLE, MODALITY, RunningScp
from sqlalchemy import select

from noctis.core.results import SETTLE_SECONDS, fill_senders, scan_results
from noctis.core.workflow import Priority
from noctis.index.models import Study
from noctis.index.results import AnalysisResult
from noctis.index.workflow import NotificationEvent, StudyWorkflow
from support import analysis as an
from support import dcmtk
from support.dicomdata import small_ct
from support.ports import LOOPBACK
from support.wait import until

pytestmark = pytest.mark.dcmtk


def test_results_sent_by_storescu_are_linked_with_their_sender(
    scp: RunningScp, tmp_path: Path
) -> None:
    image = small_ct()
    image.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    study_uid = str(image.StudyInstanceUID)
    critical = an.sr(
        tmp_path,
        study_uid,
        an.container(an.CRITICAL_HEADING, an.text(an.FINDING, "Acute subdural hematoma")),
    )
    routine = an.seg(tmp_path, study_uid, [("Liver", ("SCT", "10200004", "Liver"))])
    # -R: propose the files' own classes (storescu's default list has no SEG, an analysis
    # node's configuration would name it)
    files = [str(p) for p in (tmp_path / "ct.dcm", critical, routine)]
    peer = ["-aet", MODALITY, "-aec", AE_TITLE, LOOPBACK, str(scp.port)]
    sent = dcmtk.run_tool("storescu", ["-R", "-v", *peer, *files])
    assert sent.ok, sent.output

    time.sleep(SETTLE_SECONDS)
    assert scan_results(scp.runtime) == 2

    def senders() -> list[tuple[str | None, str | None]]:
        fill_senders(scp.runtime)
        with scp.runtime.sessions() as session:
            rows = session.execute(
                select(AnalysisResult.sender, AnalysisResult.sender_type).order_by(
                    AnalysisResult.id
                )
            )
            return [tuple(row) for row in rows]

    # the store is audited when the association ends, just after storescu returns
    until(
        lambda: senders() == [(MODALITY, "ae")] * 2,
        timeout=10,
        what="the sending AE named on both results",
        context=lambda: repr(senders()),
    )
    with scp.runtime.sessions() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        workflow = session.get(StudyWorkflow, study.id)
        assert workflow is not None and workflow.critical
        assert workflow.priority == Priority.STAT
        kinds = session.scalars(select(NotificationEvent.kind).order_by(NotificationEvent.id))
        assert list(kinds) == ["critical-result", "stat-arrived"]
