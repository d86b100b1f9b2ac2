"""The facility administrator: manages the users of its own facilities through
``/api/users``, never anyone else's, never beyond its facilities; every change and every
refusal in the audit trail."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from noctis.core.accounts import AccountError, add_user
from noctis.core.runtime import Runtime
from noctis.index.accounts import AuditRow
from support.web import client_for, create_user, token_for


@pytest.fixture
def fadmin(app, runtime: Runtime) -> httpx.Client:
    """``fa_north``: facility administrator of north."""
    create_user(runtime, "fa_north", "facility-admin", ["north"])
    return client_for(app, token_for(runtime, "fa_north"))


def _audit(runtime: Runtime) -> list[tuple[str, str, str]]:
    runtime.audit.flush()
    with runtime.sessions() as session:
        rows = session.execute(
            select(AuditRow.outcome, AuditRow.detail)
            .where(AuditRow.action == "admin", AuditRow.actor == "fa_north")
            .order_by(AuditRow.id)
        )
        return [(outcome, d["operation"], d["target"]) for outcome, d in rows]


def test_a_facility_administrator_sees_only_its_facilities_users(fadmin, clients) -> None:
    listed = fadmin.get("/api/users")
    assert listed.status_code == 200
    assert [u["username"] for u in listed.json()] == ["fa_north", "rad_north", "ref_north"]
    assert fadmin.get("/api/users/rad_north").json()["facilities"] == ["north"]
    # the others' accounts are not there at all: 404, as an unknown name
    for other in ("rad_south", "admin", "nobody"):
        assert fadmin.get(f"/api/users/{other}").status_code == 404
    # administrators still see everyone
    everyone = {u["username"] for u in clients("admin").get("/api/users").json()}
    assert {"fa_north", "rad_south", "admin"} <= everyone


def test_a_facility_administrator_creates_changes_and_disables_its_users(
    fadmin, runtime: Runtime
) -> None:
    created = fadmin.post(
        "/api/users", json={"username": "tech_n", "role": "technologist", "facilities": ["north"]}
    )
    assert created.status_code == 201, created.text
    assert created.json()["password"]
    deputy = fadmin.post(
        "/api/users",
        json={"username": "fa_deputy", "role": "facility-admin", "facilities": ["north"]},
    )
    assert deputy.status_code == 201, deputy.text
    changed = fadmin.patch("/api/users/tech_n", json={"role": "radiologist", "enabled": False})
    assert changed.status_code == 200
    assert (changed.json()["role"], changed.json()["enabled"]) == ("radiologist", False)
    assert fadmin.delete("/api/users/tech_n").status_code == 204
    assert _audit(runtime) == [
        ("success", "user.create", "tech_n"),
        ("success", "user.create", "fa_deputy"),
        ("success", "user.update", "tech_n"),
        ("success", "user.delete", "tech_n"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("post", "/api/users", {"username": "x1", "role": "admin", "facilities": ["north"]}, 403),
        ("post", "/api/users", {"username": "x2", "role": "radiologist"}, 403),
        (
            "post",
            "/api/users",
            {"username": "x3", "role": "radiologist", "facilities": ["south"]},
            403,
        ),
        (
            "post",
            "/api/users",
            {"username": "x4", "role": "facility-admin", "facilities": ["north", "south"]},
            403,
        ),
        ("patch", "/api/users/rad_north", {"facilities": ["north", "south"]}, 403),
        ("patch", "/api/users/rad_north", {"role": "admin"}, 403),
        ("patch", "/api/users/rad_south", {"enabled": False}, 404),
        ("patch", "/api/users/admin", {"password": "a-new-password-1"}, 404),
        ("delete", "/api/users/rad_south", None, 404),
        ("get", "/api/tokens", None, 403),
        ("post", "/api/tokens", {"username": "rad_north"}, 403),
    ],
    ids=[
        "grant-admin",
        "no-facility",
        "other-facility",
        "beyond-its-facilities",
        "widen-facilities",
        "raise-to-admin",
        "disable-other",
        "touch-admin",
        "delete-other",
        "list-tokens",
        "issue-token",
    ],
)
def test_a_facility_administrator_is_refused_beyond_its_facilities(
    fadmin, clients, runtime: Runtime, method: str, path: str, body, expected: int
) -> None:
    before = clients("admin").get("/api/users").json()
    response = fadmin.request(method, path, json=body)
    assert response.status_code == expected, response.text
    assert clients("admin").get("/api/users").json() == before  # nothing changed
    denied = [entry for entry in _audit(runtime) if entry[0] == "denied"]
    if path.startswith("/api/users"):
        assert len(denied) == 1 and denied[0][1].startswith("user.")


def test_other_roles_cannot_manage_users(clients) -> None:
    for username in ("rad_north", "ref_north"):
        client = clients(username)
        assert client.get("/api/users").status_code == 403
        created = client.post("/api/users", json={"username": "x", "role": "radiologist"})
        assert created.status_code == 403


def test_the_cli_gives_a_facility_administrator_its_facilities(runtime: Runtime) -> None:
    with pytest.raises(AccountError, match="needs the facilities it administers"):
        add_user(runtime, "fa_nowhere", "facility-admin")
    assert add_user(runtime, "fa_south", "facility-admin", facilities=["south"])
