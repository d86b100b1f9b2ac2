"""The one-node cluster, once per session: `scripts/cluster`'s code (support.cluster) brings it up
and takes it down. A cluster already running (`scripts/cluster up`) is used as it is and left
running. Tests that use it carry the `cluster` marker: `pytest -m "not cluster"` skips them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from support.cluster import cluster as cluster_control
from support.cluster.cluster import Cluster
from support.kube import fresh_namespace

# The first test's setup brings the cluster up: on a cold machine that builds the images
# (several minutes on two cores) and imports them into the node.
SESSION_START_TIMEOUT = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"cluster", "cluster_namespace"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("cluster")
            item.add_marker(pytest.mark.timeout(SESSION_START_TIMEOUT))


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    already_running = cluster_control.is_running()
    began = time.monotonic()
    try:
        running = cluster_control.up(log=lambda message: print(f"cluster: {message}"))
    except BaseException:
        # A cluster this run started and could not finish (pods never Ready) is not left
        # running for the next run to take as its own.
        if not already_running:
            cluster_control.down(log=lambda message: print(f"cluster: {message}"))
        raise
    print(f"\none-node cluster ready in {time.monotonic() - began:.1f} s")
    try:
        yield running
    finally:
        if not already_running:
            report = cluster_control.down(log=lambda message: print(f"cluster: {message}"))
            assert report["leftovers"] == [], "`down` left the machine unclean"


@pytest.fixture
def cluster_namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of the test's own, deleted (with what it holds) afterwards."""
    with fresh_namespace(cluster) as name:
        yield name
