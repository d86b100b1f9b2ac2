"""A small synchronous Kubernetes REST client: get, create, server-side apply, status, list.

One generic client for every kind (built-ins and ours) instead of a typed API class per group.
It rides on the official client's configuration and transport (in-cluster service-account tokens
are refreshed by it), and is built in the operator's startup, never at import.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from noctis.operator.kinds import FIELD_MANAGER, Resource

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

__all__ = ["ApiException", "Kube", "load_configuration"]


def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            return configuration
        except config.ConfigException:
            pass
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


class Kube:
    def __init__(self, configuration: client.Configuration, *, timeout: float = 30.0) -> None:
        self.api = client.ApiClient(configuration)
        self.timeout = timeout

    def close(self) -> None:
        self.api.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=self.timeout
        )
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode())
        return json.loads(data) if data else None

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return self.request("GET", resource.path(namespace, quote(name)))  # type: ignore[no-any-return]
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, resource: Resource, namespace: str | None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        result = self.request("GET", resource.path(namespace), query=query)
        items = list(result.get("items", []))
        for item in items:  # list items of built-in kinds come without apiVersion and kind
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        return items

    def create(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"].get("namespace")
        return self.request(  # type: ignore[no-any-return]
            "POST", resource.path(namespace), query={"fieldManager": FIELD_MANAGER}, body=obj
        )

    def apply(
        self, resource: Resource, obj: dict[str, Any], *, force: bool, manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply: field manager ``manager`` owns exactly the fields in ``obj``."""
        meta = obj["metadata"]
        query = {"fieldManager": manager, "force": "true" if force else "false"}
        return self.request(  # type: ignore[no-any-return]
            "PATCH",
            resource.path(meta.get("namespace"), quote(meta["name"])),
            query=query,
            body=obj,
            content_type=APPLY_PATCH,
        )

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        sub: str = "",
    ) -> dict[str, Any]:
        return self.request(  # type: ignore[no-any-return]
            "PATCH",
            resource.path(namespace, quote(name), sub),
            body=patch,
            content_type=MERGE_PATCH,
        )

    def patch_status(
        self, resource: Resource, namespace: str | None, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        return self.patch(resource, namespace, name, {"status": status}, sub="status")

    def delete(self, resource: Resource, namespace: str | None, name: str) -> None:
        try:
            self.request("DELETE", resource.path(namespace, quote(name)))
        except ApiException as exc:
            if exc.status != 404:
                raise
