"""The LoadBalancer allocator: what a cloud's controller (or MetalLB) does, for this machine.

It watches Services and gives each one of type LoadBalancer an address from 127.240.0.0/24,
written to ``status.loadBalancer.ingress`` as a cloud controller writes it; kube-proxy then
routes that address to the Service's pods. Loopback only: on this machine no other address may
be a traffic target. ``python -m support.cluster.loadbalancer --kubeconfig FILE`` runs it (the
cluster's supervisor does).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from support.cluster.layout import LOADBALANCER_POOL

log = logging.getLogger("loadbalancer")
Key = tuple[str, str]  # (namespace, name)


def _ingress_ips(service: Mapping[str, Any]) -> list[str]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [entry["ip"] for entry in ingress if entry.get("ip")]


def _wants_address(service: Mapping[str, Any]) -> bool:
    spec = service.get("spec") or {}
    # A Service asking for another implementation's class is not ours to serve.
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def _in_pool(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in LOADBALANCER_POOL
    except ValueError:
        return False


def allocations(services: Mapping[Key, Mapping[str, Any]]) -> dict[Key, str | None]:
    """The status changes the Services need: an address from the pool, or None to clear one.

    A Service keeps the pool address it has; a new one gets the address it asked for
    (``spec.loadBalancerIP``) when that is in the pool and free, else the lowest free one.
    A Service that is no longer of type LoadBalancer gives its address back.
    """
    taken: dict[str, Key] = {}
    changes: dict[Key, str | None] = {}
    for key, service in sorted(services.items()):
        held = [ip for ip in _ingress_ips(service) if _in_pool(ip)]
        if not _wants_address(service):
            if held:
                changes[key] = None
            continue
        if held and held[0] not in taken:
            taken[held[0]] = key
    served = set(taken.values())
    free = (str(ip) for ip in LOADBALANCER_POOL.hosts() if str(ip) not in taken)
    for key, service in sorted(services.items()):
        if not _wants_address(service) or key in served:
            continue
        asked = (service.get("spec") or {}).get("loadBalancerIP") or ""
        ip = asked if _in_pool(asked) and asked not in taken else next(free, None)
        if ip is None:
            log.error("no free address left in %s for %s/%s", LOADBALANCER_POOL, *key)
            continue
        taken[ip] = key
        changes[key] = ip
    return changes


def status_patch(ip: str | None) -> dict[str, Any]:
    ingress = [{"ip": ip, "ipMode": "VIP"}] if ip else []
    return {"status": {"loadBalancer": {"ingress": ingress}}}


def run(kubeconfig: str) -> None:  # pragma: no cover - exercised by the cluster tests
    from kubernetes import client, config, watch
    from kubernetes.client.exceptions import ApiException

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    while True:
        try:
            listed = api.list_service_for_all_namespaces()
            services: dict[Key, dict[str, Any]] = {
                (s.metadata.namespace, s.metadata.name): api.api_client.sanitize_for_serialization(
                    s
                )
                for s in listed.items
            }
            _apply(api, services)
            stream = watch.Watch().stream(
                api.list_service_for_all_namespaces,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=300,
            )
            for event in stream:
                obj = api.api_client.sanitize_for_serialization(event["object"])
                key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
                if event["type"] == "DELETED":
                    services.pop(key, None)
                else:
                    services[key] = obj
                _apply(api, services)
        except ApiException as error:
            if error.status != 410:  # 410: the watch expired; list again
                log.warning("API error: %s %s", error.status, error.reason)
                time.sleep(1)
        except Exception as error:
            log.warning("watch failed, listing again: %s", error)
            time.sleep(1)


def _apply(api: Any, services: dict[Key, dict[str, Any]]) -> None:  # pragma: no cover
    for (namespace, name), ip in allocations(services).items():
        api.patch_namespaced_service_status(name, namespace, status_patch(ip))
        services[(namespace, name)] = {**services[(namespace, name)], **status_patch(ip)}
        if ip:
            log.info("%s/%s: LoadBalancer address %s", namespace, name, ip)
        else:
            log.info("%s/%s: no longer a LoadBalancer, address released", namespace, name)


def main(argv: Iterable[str] | None = None) -> None:  # pragma: no cover
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s"
    )
    log.info("allocating LoadBalancer addresses from %s", LOADBALANCER_POOL)
    run(args.kubeconfig)


if __name__ == "__main__":  # pragma: no cover
    main()
