"""The operator waits, at start, until the API server serves the kinds it watches (a CRD just
created answers 404 or 429 for a moment), instead of starting watchers that log errors."""

from __future__ import annotations

import json
import threading

from noctis.operator.kinds import Resource
from noctis.operator.kube import Kube, load_configuration
from noctis.operator.served import wait_until_served
from support.kube import ControlPlane

WIDGETS = Resource("probe.noctis.test", "v1", "widgets", "Widget")
WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.probe.noctis.test"},
    "spec": {
        "group": "probe.noctis.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object"}},
            }
        ],
    },
}


def test_the_operator_starts_watching_only_once_its_kinds_are_served(kube: ControlPlane) -> None:
    client = Kube(load_configuration(str(kube.kubeconfig)))
    installed = threading.Event()

    def install_later() -> None:
        threading.Event().wait(1.5)
        installed.set()
        kube.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))

    installer = threading.Thread(target=install_later)
    installer.start()
    try:
        wait_until_served(client, [WIDGETS], ["default"], timeout=60, interval=0.2)
        assert installed.is_set(), "it returned before the kind existed"
        assert client.list(WIDGETS, "default") == []  # served now
    finally:
        installer.join()
        kube.kubectl("delete", "crd", "widgets.probe.noctis.test", "--wait=false")
        client.close()
