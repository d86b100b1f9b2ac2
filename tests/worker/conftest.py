"""Fixtures for the worker tests; helpers are in worker_support.py."""

from __future__ import annotations

import pytest
from worker_support import empty_broker

from support.redis import RedisServer


@pytest.fixture
def broker(redis_server: RedisServer) -> str:
    """The URL of a real Redis broker, emptied for the test."""
    return empty_broker(redis_server)
