"""Who may associate: unknown AE titles, addresses outside an AE's networks, a wrong called
AE title and disabled facilities get A-ASSOCIATE-RJ; services are checked per request.
"""

from __future__ import annotations

import pytest
from scp_support import AE_TITLE, ECHO_ONLY, MODALITY, RunningScp

from noctis.core.facilities import disable_facility
from noctis.core.runtime import Runtime
from noctis.scp import status
from noctis.scp.client import NO_ASSOCIATION, echo
from noctis.scp.metrics import get_metrics
from support import dcmtk
from support.archive import register_facility
from support.ports import LOOPBACK

pytestmark = pytest.mark.dcmtk

CALLING_REJECTED = "Reason: Calling AE Title Not Recognized"
CALLED_REJECTED = "Reason: Called AE Title Not Recognized"


def rejections(reason: str) -> float:
    return get_metrics().associations_rejected.labels(reason=reason)._value.get()


def test_registered_ae_may_echo(scp: RunningScp) -> None:
    result = dcmtk.echoscu(scp.port, calling=MODALITY, called=AE_TITLE)
    assert result.ok, result.output
    assert echo(LOOPBACK, scp.port, AE_TITLE, MODALITY) == status.SUCCESS


def test_unknown_calling_ae_is_rejected(scp: RunningScp) -> None:
    before = rejections("calling-ae")
    result = dcmtk.echoscu(scp.port, calling="STRANGER", called=AE_TITLE)
    assert not result.ok
    assert "Association Rejected" in result.output and CALLING_REJECTED in result.output
    assert "Rejected Permanent, Source: Service User" in result.output
    assert echo(LOOPBACK, scp.port, AE_TITLE, "STRANGER") == NO_ASSOCIATION
    assert rejections("calling-ae") == before + 2


def test_wrong_called_ae_is_rejected(scp: RunningScp) -> None:
    result = dcmtk.echoscu(scp.port, calling=MODALITY, called="NOT-NOCTIS")
    assert not result.ok
    assert CALLED_REJECTED in result.output


def test_address_outside_the_aes_networks_is_rejected(scp: RunningScp) -> None:
    register_facility(
        scp.runtime,
        "far-away",
        [
            {"aeTitle": "FARAWAY", "allowedCIDRs": ["10.20.0.0/24"]},
            # No CIDRs but a host: only that host may call with this title.
            {"aeTitle": "HOSTBOUND", "host": "192.0.2.7", "allowedCIDRs": []},
            {"aeTitle": "LOCALHOST", "host": "127.0.0.1", "allowedCIDRs": []},
        ],
    )
    for title in ("FARAWAY", "HOSTBOUND"):
        result = dcmtk.echoscu(scp.port, calling=title, called=AE_TITLE)
        assert CALLING_REJECTED in result.output, (title, result.output)
    assert dcmtk.echoscu(scp.port, calling="LOCALHOST", called=AE_TITLE).ok


def test_disabled_facility_is_rejected(scp: RunningScp, runtime: Runtime) -> None:
    with runtime.sessions.begin() as session:
        assert disable_facility(session, "st-mary")
    result = dcmtk.echoscu(scp.port, calling=MODALITY, called=AE_TITLE)
    assert CALLING_REJECTED in result.output


def test_services_are_checked_per_request(scp: RunningScp) -> None:
    register_facility(
        scp.runtime,
        "st-mary",
        [
            {"aeTitle": MODALITY, "services": ["store"]},
            {"aeTitle": ECHO_ONLY, "services": ["echo"]},
        ],
    )
    assert echo(LOOPBACK, scp.port, AE_TITLE, MODALITY) == status.NOT_AUTHORIZED
    assert echo(LOOPBACK, scp.port, AE_TITLE, ECHO_ONLY) == status.SUCCESS


@pytest.mark.parametrize("runtime", ["production"], indirect=True)
def test_registry_down_is_a_transient_rejection(
    scp: RunningScp, request: pytest.FixtureRequest
) -> None:
    postgres = request.getfixturevalue("postgres")
    with postgres.offline():
        result = dcmtk.echoscu(scp.port, calling=MODALITY, called=AE_TITLE)
    assert "Rejected Transient, Source: Service User" in result.output, result.output
    assert dcmtk.echoscu(scp.port, calling=MODALITY, called=AE_TITLE).ok  # and it recovers
