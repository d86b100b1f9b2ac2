"""The cluster tooling's pure parts, without a cluster: the LoadBalancer allocator's choices and
which iptables chains `down` removes (ours, never another container network's)."""

from __future__ import annotations

from typing import Any

from support.cluster.host import _chain_removal
from support.cluster.loadbalancer import allocations, status_patch


def service(kind: str = "LoadBalancer", ip: str | None = None, **spec: Any) -> dict[str, Any]:
    status = {"loadBalancer": {"ingress": [{"ip": ip}]}} if ip else {}
    return {"spec": {"type": kind, **spec}, "status": status}


def test_new_loadbalancers_get_the_lowest_free_loopback_addresses() -> None:
    services = {
        ("a", "held"): service(ip="127.240.0.1"),
        ("b", "new"): service(),
        ("c", "newer"): service(),
        ("d", "plain"): service("ClusterIP"),
    }
    assert allocations(services) == {("b", "new"): "127.240.0.2", ("c", "newer"): "127.240.0.3"}


def test_an_address_asked_for_is_given_when_free_and_in_the_pool() -> None:
    services = {
        ("a", "asks"): service(loadBalancerIP="127.240.0.7"),
        ("a", "asks-outside"): service(loadBalancerIP="10.0.0.7"),
    }
    assert allocations(services) == {
        ("a", "asks"): "127.240.0.7",
        ("a", "asks-outside"): "127.240.0.1",
    }


def test_a_service_no_longer_a_loadbalancer_gives_its_address_back() -> None:
    services = {("a", "was"): service("ClusterIP", ip="127.240.0.1"), ("a", "is"): service()}
    assert allocations(services) == {("a", "was"): None, ("a", "is"): "127.240.0.1"}
    assert status_patch(None) == {"status": {"loadBalancer": {"ingress": []}}}


def test_services_of_another_loadbalancer_class_and_settled_ones_are_left_alone() -> None:
    services = {
        ("a", "metallb"): service(loadBalancerClass="metallb.io/metallb"),
        ("a", "done"): service(ip="127.240.0.9"),
    }
    assert allocations(services) == {}


def test_two_services_claiming_one_address_do_not_share_it() -> None:
    services = {
        ("a", "first"): service(ip="127.240.0.1"),
        ("b", "second"): service(ip="127.240.0.1"),
    }
    assert allocations(services) == {("b", "second"): "127.240.0.2"}


NAT_DUMP = """\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-0aaa - [0:0]
:CNI-0bbb - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.244.0.5 -m comment --comment "name: \\"noctis-pods\\" id: \\"a\\"" -j CNI-0aaa
-A POSTROUTING -s 10.88.0.11/32 -m comment --comment "name: \\"podman\\" id: \\"xyz\\"" -j CNI-0bbb
-A CNI-0aaa -d 10.244.0.0/24 -m comment --comment "name: \\"noctis-pods\\" id: \\"a\\"" -j ACCEPT
-A CNI-0bbb -d 10.88.0.0/16 -m comment --comment "name: \\"podman\\" id: \\"xyz\\"" -j ACCEPT
-A KUBE-POSTROUTING -j MASQUERADE
COMMIT
"""


def test_down_removes_kubernetes_chains_and_our_pods_chains_but_not_podmans() -> None:
    script, chains = _chain_removal("nat", NAT_DUMP)
    assert chains == ["CNI-0aaa", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    lines = script.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert (
        '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in lines
    )
    assert not any("CNI-0bbb" in line or "podman" in line for line in lines)
    assert "-X CNI-0aaa" in lines and "-F KUBE-SERVICES" in lines


def test_down_has_nothing_to_remove_from_a_clean_table() -> None:
    clean = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
    assert _chain_removal("filter", clean) == ("", [])
