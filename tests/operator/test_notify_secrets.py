"""A Facility's webhook secrets reach the workers that sign the calls, from their Secrets
only: the worker and transfer pods get NOCTIS_WEBHOOK_SECRETS__<facility>__<webhook> by
secretKeyRef (never in the ConfigMap, never on the API or SCP pods), and that variable is
what `Settings` reads as the webhook's secret. A Facility spec naming a webhook without a
secretRef is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from noctis.core.notify_settings import facility_receivers
from noctis.index.models import Facility
from noctis.operator.builders import archive as arc
from noctis.settings import Settings
from noctis.specs.archive import ArchiveSpec
from noctis.specs.facility import FacilitySpec
from noctis.specs.kube import SecretKeyRef
from noctis.specs.notifications import NotificationsSpec
from noctis.specs.storagepool import StoragePoolSpec

HOOK = {"name": "pager", "url": "https://pager.example/hook"}
IMAGES = arc.Images(scp="reg/noctis-scp:1", api="reg/noctis-api:1", worker="reg/noctis-worker:1")
POOL = StoragePoolSpec.model_validate(
    {"endpoint": "http://s3.store:8333", "bucket": "images", "credentials": {"secretName": "s3"}}
)
ARCHIVE = ArchiveSpec.model_validate(
    {"storagePool": "images", "database": {"name": "db", "key": "url"}}
)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_webhook_secrets_reach_the_workers_from_their_secret_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refs = {("st-mary", "pager"): SecretKeyRef(name="north-hooks", key="pager")}
    ctx = arc.archive_context("noctis", "pacs", ARCHIVE, POOL, webhook_secrets=refs)
    variable = "NOCTIS_WEBHOOK_SECRETS__st-mary__pager"
    objects = {
        (o["kind"], o["metadata"]["name"]): o
        for o in arc.build_all(ctx, ARCHIVE, IMAGES, ["north"])
    }
    for name in ("noctis-worker", "noctis-transfer"):
        [container] = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert env_of(container)[variable] == {
            "secretKeyRef": {"name": "north-hooks", "key": "pager"}
        }
    [api] = objects[("Deployment", "noctis-api")]["spec"]["template"]["spec"]["containers"]
    assert variable not in env_of(api)
    assert not any("WEBHOOK" in key for key in objects[("ConfigMap", "noctis-config")]["data"])

    monkeypatch.setenv(variable, "the-webhook-secret")
    settings = Settings(database_url="sqlite://")
    facility = Facility(
        id=1,
        name="st-mary",
        spec={"notifications": {"webhooks": [{**HOOK, "secretRef": {"name": "n", "key": "k"}}]}},
    )
    receivers = facility_receivers(None, facility, settings)  # type: ignore[arg-type]
    assert receivers.source == "facility-resource"
    assert receivers.secrets == {"pager": "the-webhook-secret"}
    assert "the-webhook-secret" not in repr(settings) + repr(receivers)


def test_a_facility_webhook_needs_a_secret_ref_and_known_kinds() -> None:
    with pytest.raises(ValidationError, match="webhooks need a secretRef"):
        FacilitySpec.model_validate({"notifications": {"webhooks": [HOOK]}})
    with pytest.raises(ValidationError, match="unknown notification kinds"):
        NotificationsSpec.model_validate({"webhooks": [{**HOOK, "kinds": ["lunch"]}]})
    with pytest.raises(ValidationError, match="webhook names listed twice"):
        NotificationsSpec.model_validate({"webhooks": [HOOK, HOOK]})
