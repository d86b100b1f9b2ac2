"""The reports' periodic job: store the PDF and SR of signed versions whose storing failed
when they were signed (an object store outage, a full quota), rendered identically."""

from __future__ import annotations

from noctis.core.reports import store_pending_documents
from noctis.core.runtime import Runtime
from noctis.worker.periodic import PeriodicJob


def store_report_documents(runtime: Runtime) -> int:
    return store_pending_documents(
        runtime, older_than=runtime.settings.report_documents_retry_seconds
    )


REPORT_DOCUMENTS = PeriodicJob(
    "report-documents",
    lambda settings: settings.report_documents_retry_seconds,
    store_report_documents,
)
