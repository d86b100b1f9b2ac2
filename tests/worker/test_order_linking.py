"""The order-linking job on a worker's clock: a study that arrives for an order is linked
within a tick, and takes the order's STAT priority."""

from __future__ import annotations

from pathlib import Path

from noctis.core.orders import OrderFields, create_order
from noctis.core.workflow import Actor, Priority
from noctis.index.orders import Order
from noctis.index.workflow import StudyWorkflow
from noctis.worker.orders import ORDER_LINKING
from noctis.worker.periodic import PeriodicRunner
from noctis.worker.tasks import PERIODIC_JOBS
from support import wait
from support.archive import embedded_settings, open_runtime, register_facility
from support.dicomdata import small_ct
from support.incoming import ingest_file


def test_a_worker_links_an_arrived_study_to_its_stat_order(tmp_path: Path) -> None:
    assert ORDER_LINKING in PERIODIC_JOBS
    runtime = open_runtime(embedded_settings(tmp_path, order_link_seconds=0.05))
    facility = register_facility(runtime, "north", [{"aeTitle": "CT1"}])
    fields = OrderFields(
        accession_number="L1", patient_id="P1", modality="CT", scheduled_date="20261207"
    )
    with runtime.sessions.begin() as session:
        order_id = create_order(
            session, facility.id, fields.model_copy(update={"priority": "stat"}), actor=Actor("t")
        ).id
    runner = PeriodicRunner(runtime, [ORDER_LINKING]).start()
    try:
        path = tmp_path / "ct.dcm"
        small_ct(AccessionNumber="L1").save_as(path, enforce_file_format=True)
        ingest_file(runtime, facility, path)

        def linked() -> int | None:
            with runtime.sessions() as session:
                return session.get(Order, order_id).study_pk

        wait.until(lambda: linked() is not None, what="the study linked to its order", timeout=10)
        with runtime.sessions() as session:
            assert session.get(StudyWorkflow, linked()).priority == int(Priority.STAT)
    finally:
        runner.stop()
        runtime.close()
