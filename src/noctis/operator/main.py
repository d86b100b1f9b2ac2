"""``noctis operator``: run the kopf operator with the handlers of ``noctis.operator.handlers``."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

from noctis.operator.settings import OperatorSettings

if TYPE_CHECKING:
    from noctis.settings import Settings


def run(
    settings: Settings | None = None,
    *,
    namespaces: list[str] | None = None,
    operator_settings: OperatorSettings | None = None,
) -> None:
    """Run the operator until it is stopped (SIGTERM/SIGINT).

    Watches ``namespaces`` (else ``NOCTIS_OPERATOR_NAMESPACES``, or the whole cluster with
    ``NOCTIS_OPERATOR_CLUSTERWIDE=true``), serves kopf's liveness endpoint at ``/healthz`` on
    ``NOCTIS_OPERATOR_LIVENESS_PORT``, and joins the peering object ``NOCTIS_OPERATOR_PEERING``
    so that of several replicas exactly one is active (unless ``NOCTIS_OPERATOR_STANDALONE``).
    The Facility registry is synced into ``NOCTIS_DATABASE_URL``.
    """
    import kopf

    import noctis.operator.handlers  # noqa: F401  (registers the handlers)

    _prefix_object_logs()
    config = operator_settings or OperatorSettings()
    updates: dict[str, object] = {}
    if namespaces:
        updates["operator_namespaces"] = ",".join(namespaces)
    if settings is not None and settings.database_url and not config.database_url:
        updates["database_url"] = settings.database_url
    if updates:
        config = config.model_copy(update=updates)
    watched = config.namespaces()
    if not config.operator_clusterwide and not watched:
        raise SystemExit(
            "noctis operator: give --namespace, NOCTIS_OPERATOR_NAMESPACES, "
            "or NOCTIS_OPERATOR_CLUSTERWIDE=true"
        )
    kopf.run(
        clusterwide=config.operator_clusterwide,
        namespaces=[] if config.operator_clusterwide else watched,
        standalone=config.operator_standalone,
        peering_name=None if config.operator_standalone else config.operator_peering,
        priority=config.priority(),
        liveness_endpoint=config.liveness_endpoint,
        memo=kopf.Memo(settings=config),
    )


class _ObjectPrefixing(logging.Formatter):
    """Prefix kopf's per-object log lines with ``[namespace/name]``, whatever the format."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            where = f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else ref["name"]
            record = copy.copy(record)
            record.msg = f"[{where}] {record.msg}"
        return self.inner.format(record)


def _prefix_object_logs() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    for handler in root.handlers:
        if not isinstance(handler.formatter, _ObjectPrefixing):
            handler.setFormatter(_ObjectPrefixing(handler.formatter))
