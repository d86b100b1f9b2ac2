"""Notifications over REST and on the page: each user's list (newest first, unread count,
marked read), facility isolation (another facility's notification is not seen, not counted,
not markable: 404), preferences and their limits by role, and a facility's webhooks and
e-mail recipients (administrators and its facility administrators; secrets never answered;
a Facility resource's declaration wins). Every change lands in the audit trail."""

from __future__ import annotations

import stat
from typing import Any

import pytest
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import select

from noctis.core.facilities import apply_facility
from noctis.core.index_secrets import KEY_FILE, Sealer, sealer
from noctis.core.notifications import NotificationKind, notify
from noctis.core.notify_fanout import fan_out
from noctis.core.runtime import Runtime
from noctis.index.accounts import AuditRow
from noctis.index.models import Facility
from noctis.index.notify import FacilityNotificationSettings
from noctis.specs.facility import FacilitySpec
from support.web import TEST_PASSWORD_SUFFIX, client_for, create_user, token_for

SECRET = "a-secret-of-twenty-chars"


def _facility_id(runtime: Runtime, name: str) -> int:
    with runtime.sessions() as session:
        return session.scalars(select(Facility.id).where(Facility.name == name)).one()


def _raise(runtime: Runtime, kind: NotificationKind, facility: str, title: str) -> None:
    with runtime.sessions.begin() as session:
        notify(
            session,
            kind,
            facility_id=_facility_id(runtime, facility),
            title=title,
            study_instance_uid="1.2.840.99." + str(abs(hash(title)) % 10_000),
            reason="checked",
        )
    fan_out(runtime)


def _audited(runtime: Runtime, actor: str) -> list[dict[str, Any]]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(AuditRow).where(AuditRow.action == "notification", AuditRow.actor == actor)
        )
        return [row.detail or {} for row in rows]


@pytest.fixture
def fadmin(runtime: Runtime, app: Any) -> Any:
    create_user(runtime, "fadmin_north", "facility-admin", ["north"])
    return client_for(app, token_for(runtime, "fadmin_north"))


def test_each_user_reads_their_own_list_of_their_facilities_only(
    runtime: Runtime, clients: Any
) -> None:
    _raise(runtime, NotificationKind.STAT_ARRIVED, "north", "STAT study: NORTH^ONE")
    _raise(runtime, NotificationKind.CRITICAL_RESULT, "north", "Critical result: NORTH^TWO")
    _raise(runtime, NotificationKind.STAT_ARRIVED, "south", "STAT study: SOUTH^ONE")
    rad_north, rad_south = clients("rad_north"), clients("rad_south")
    listed = rad_north.get("/api/notifications").json()
    assert listed["unread"] == 2
    assert [n["title"] for n in listed["notifications"]] == [
        "Critical result: NORTH^TWO",
        "STAT study: NORTH^ONE",
    ]
    south = rad_south.get("/api/notifications").json()
    assert [n["title"] for n in south["notifications"]] == ["STAT study: SOUTH^ONE"]
    # The referring physician hears of neither (reports only); nor does the administrator.
    assert clients("ref_north").get("/api/notifications").json() == {
        "unread": 0,
        "notifications": [],
    }
    first = listed["notifications"][1]["id"]
    assert rad_south.post(f"/api/notifications/{first}/read").status_code == 404
    assert rad_north.post(f"/api/notifications/{first}/read").json() == {"id": first, "read": True}
    assert rad_north.get("/api/notifications?unread=true").json()["unread"] == 1
    assert rad_north.post("/api/notifications/read-all").json() == {"marked": 1}
    assert rad_north.get("/api/notifications").json()["unread"] == 0
    assert rad_south.get("/api/notifications").json()["unread"] == 1
    assert [d["change"] for d in _audited(runtime, "rad_north")] == ["read", "read-all"]
    assert clients(None).get("/api/notifications").status_code == 401


def test_preferences_choose_kinds_and_channels_within_the_role(
    runtime: Runtime, clients: Any
) -> None:
    ref = clients("ref_north")
    assert ref.get("/api/me/notifications").json() == {
        "kinds": ["report-amended", "report-final"],
        "defaultKinds": ["report-final", "report-amended"],
        "eligibleKinds": ["report-final", "report-amended"],
        "usesDefault": True,
        "channels": ["in-app"],
        "emailAddress": "",
    }
    refused = ref.put("/api/me/notifications", json={"kinds": ["stat-arrived"]})
    assert refused.status_code == 422
    assert "referring-physician cannot receive stat-arrived" in refused.json()["detail"]
    no_address = ref.put("/api/me/notifications", json={"channels": ["email"]})
    assert no_address.status_code == 422 and "emailAddress" in no_address.json()["detail"]
    saved = ref.put(
        "/api/me/notifications",
        json={
            "kinds": ["report-amended"],
            "channels": ["in-app", "email"],
            "emailAddress": "ref@north.example",
        },
    )
    assert saved.status_code == 200
    assert saved.json()["kinds"] == ["report-amended"] and not saved.json()["usesDefault"]
    _raise(runtime, NotificationKind.REPORT_FINAL, "north", "Report final: A")
    _raise(runtime, NotificationKind.REPORT_AMENDED, "north", "Report amended: A")
    titles = [n["title"] for n in ref.get("/api/notifications").json()["notifications"]]
    assert titles == ["Report amended: A"]
    assert _audited(runtime, "ref_north")[0]["change"] == "preferences"


def test_a_facilitys_receivers_are_set_by_its_administrators_and_secrets_stay_inside(
    runtime: Runtime, clients: Any, fadmin: Any
) -> None:
    body = {
        "webhooks": [
            {"name": "pager", "url": "https://pager.north.example/hook", "secret": SECRET}
        ],
        "emailRecipients": [{"address": "oncall@north.example", "kinds": ["critical-result"]}],
    }
    url = "/api/facilities/north/notifications"
    assert clients("rad_north").put(url, json=body).status_code == 403
    assert clients("rad_south").get(url).status_code == 404  # not their facility: not there
    assert fadmin.get("/api/facilities/south/notifications").status_code == 404
    no_secret = {"webhooks": [{"name": "pager", "url": "https://pager.north.example/hook"}]}
    assert fadmin.put(url, json=no_secret).status_code == 422
    saved = fadmin.put(url, json=body)
    assert saved.status_code == 200, saved.text
    assert SECRET not in saved.text
    shown = clients("admin").get(url).json()
    assert shown["source"] == "rest"
    assert shown["webhooks"] == [
        {
            "name": "pager",
            "url": "https://pager.north.example/hook",
            "kinds": ["stat-arrived", "report-final", "report-amended", "critical-result"],
            "secretSet": True,
        }
    ]
    assert shown["emailRecipients"] == [
        {"address": "oncall@north.example", "kinds": ["critical-result"]}
    ]
    # A change that leaves the secret out keeps it.
    moved = {"webhooks": [{"name": "pager", "url": "https://pager2.north.example/hook"}]}
    assert fadmin.put(url, json=moved).json()["webhooks"][0]["secretSet"] is True
    # In the index it is sealed (a copy of the database does not give it away), with the key
    # embedded mode generated beside it; the worker opens it to sign (test_notify_delivery).
    with runtime.sessions() as session:
        [kept] = session.scalars(select(FacilityNotificationSettings.secrets)).all()
    assert kept["pager"].startswith("fernet:") and SECRET not in kept["pager"]
    assert sealer(runtime.settings).open(kept["pager"]) == SECRET
    key_file = runtime.settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    [audit] = _audited(runtime, "fadmin_north")[:1]
    assert audit["secretsChanged"] == ["pager"] and SECRET not in str(
        _audited(runtime, "fadmin_north")
    )

    # Declared by the Facility resource, the receivers are read-only here.
    with runtime.sessions.begin() as session:
        spec = {
            "notifications": {
                "webhooks": [
                    {
                        "name": "ris",
                        "url": "https://ris.north.example/hook",
                        "secretRef": {"name": "north-hooks", "key": "ris"},
                    }
                ]
            }
        }
        apply_facility(session, "north", FacilitySpec.model_validate(spec))
    declared = clients("admin").get(url).json()
    assert declared["source"] == "facility-resource"
    assert declared["webhooks"][0]["secretRef"] == {"name": "north-hooks", "key": "ris"}
    assert "secretSet" not in declared["webhooks"][0]  # the workers' business, from the Secret
    conflict = clients("admin").put(url, json=body)
    assert conflict.status_code == 409 and "Facility resource" in conflict.json()["detail"]


def test_the_page_lists_marks_read_and_saves_preferences(runtime: Runtime, clients: Any) -> None:
    _raise(runtime, NotificationKind.STAT_ARRIVED, "north", "STAT study: PAGE^TEST")
    page = clients("rad_north").get("/ui/notifications")
    assert page.status_code == 200
    assert "STAT study: PAGE^TEST" in page.text and "1 unread" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "style=" not in page.text
    assert "STAT study: PAGE^TEST" not in clients("rad_south").get("/ui/notifications").text
    [item] = clients("rad_north").get("/api/notifications").json()["notifications"]
    marked = clients("rad_north").post(
        f"/ui/notifications/{item['id']}/read", follow_redirects=False
    )
    assert (marked.status_code, marked.headers["location"]) == (303, "/ui/notifications")
    assert "0 unread" in clients("rad_north").get("/ui/notifications").text
    saved = clients("rad_north").post(
        "/ui/notifications/preferences",
        data={"kinds": ["critical-result"], "channels": ["in-app"]},
        follow_redirects=False,
    )
    assert saved.headers["location"] == "/ui/notifications?saved=true"
    prefs = clients("rad_north").get("/api/me/notifications").json()
    assert prefs["kinds"] == ["critical-result"]
    refused = clients("rad_north").post(
        "/ui/notifications/preferences",
        data={"channels": ["email"]},
        follow_redirects=False,
    )
    assert "error=" in refused.headers["location"]
    anonymous = clients(None).get("/ui/notifications", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


def test_a_signed_and_amended_report_reaches_the_referring_physician_of_its_facility(
    runtime: Runtime, clients: Any, dw: Any
) -> None:
    """Across parts: the report signed over REST raises report-final in its transaction, the
    amendment report-amended; the fan-out puts them in the lists of who should hear."""
    built = dw.build_study(["explicit"], AccessionNumber="ACC-NOTIFY")
    rad = clients("rad_north")
    assert dw.stow(rad, list(built.files.values())).status_code == 200
    url = f"/api/studies/north/{built.study_uid}/report"
    password = {"password": "rad_north" + TEST_PASSWORD_SUFFIX}
    rad.put(f"{url}/draft", json={"text": "IMPRESSION: Normal."})
    assert rad.post(f"{url}/sign", json={"state": "final", **password}).is_success
    rad.post(f"{url}/amend")
    rad.put(f"{url}/draft", json={"text": "IMPRESSION: Normal.\nADDENDUM: seen again."})
    assert rad.post(f"{url}/sign", json={"state": "final", **password}).is_success
    fan_out(runtime)
    listed = clients("ref_north").get("/api/notifications").json()["notifications"]
    assert [(n["kind"], n["studyInstanceUID"]) for n in listed] == [
        ("report-amended", built.study_uid),
        ("report-final", built.study_uid),
    ]
    # Each links to the report from the page.
    page = clients("ref_north").get("/ui/notifications").text
    assert page.count(f'href="/ui/reports/north/{built.study_uid}"') == 2
    # The radiologist who signed is not told of their own signature; the other facility's
    # radiologist hears nothing.
    for user in ("rad_north", "rad_south"):
        assert clients(user).get("/api/notifications").json()["notifications"] == [], user


@pytest.mark.parametrize(
    ("target", "network"),
    [
        ("http://127.0.0.1:5432/hook", "127.0.0.0/8"),
        ("http://[::1]:8080/hook", "::1/128"),
        ("http://[::ffff:127.0.0.1]/hook", "127.0.0.0/8"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.0.0/16"),
        ("http://localhost:8080/hook", "localhost"),
    ],
)
def test_a_webhook_aimed_at_this_host_or_the_metadata_endpoint_is_refused(
    runtime: Runtime, fadmin: Any, target: str, network: str
) -> None:
    """A facility administrator may not have the archive call its own host's services or the
    cloud's metadata endpoint (NOCTIS_WEBHOOK_BLOCKED_NETWORKS); a LAN address is fine."""
    url = "/api/facilities/north/notifications"
    refused = fadmin.put(
        url, json={"webhooks": [{"name": "pager", "url": target, "secret": SECRET}]}
    )
    assert refused.status_code == 422
    assert network in refused.json()["detail"]
    assert fadmin.get(url).json()["webhooks"] == []  # nothing stored
    lan = {"webhooks": [{"name": "pager", "url": "http://10.20.30.40/hook", "secret": SECRET}]}
    assert fadmin.put(url, json=lan).status_code == 200


def test_a_secret_is_refused_where_there_is_no_key_to_seal_it_with(
    runtime: Runtime, fadmin: Any
) -> None:
    """Production without NOCTIS_INDEX_SECRETS_KEY (the settings switched to production on
    this embedded archive): a webhook secret set through REST is refused with what to do,
    and nothing is kept."""
    runtime.settings = runtime.settings.model_copy(
        update={"mode": "production", "database_url": runtime.settings.resolved_database_url()}
    )
    body = {
        "webhooks": [{"name": "pager", "url": "https://pager.north.example/hook", "secret": SECRET}]
    }
    refused = fadmin.put("/api/facilities/north/notifications", json=body)
    assert refused.status_code == 409
    assert "NOCTIS_INDEX_SECRETS_KEY" in refused.json()["detail"]
    assert "Facility resource" in refused.json()["detail"]
    with runtime.sessions() as session:
        assert session.scalars(select(FacilityNotificationSettings)).all() == []
    assert not (runtime.settings.data_dir / KEY_FILE).exists()


def test_a_secret_kept_before_sealing_is_used_and_sealed_at_the_next_change(
    runtime: Runtime, fadmin: Any
) -> None:
    with runtime.sessions.begin() as session:
        session.add(
            FacilityNotificationSettings(
                facility_id=_facility_id(runtime, "north"),
                settings={"webhooks": [{"name": "pager", "url": "https://pager.north.example/"}]},
                secrets={"pager": SECRET},  # as an archive before sealing kept it
            )
        )
    url = "/api/facilities/north/notifications"
    assert fadmin.get(url).json()["webhooks"][0]["secretSet"] is True
    moved = {"webhooks": [{"name": "pager", "url": "https://pager2.north.example/hook"}]}
    assert fadmin.put(url, json=moved).status_code == 200
    with runtime.sessions() as session:
        [kept] = session.scalars(select(FacilityNotificationSettings.secrets)).all()
    assert kept["pager"].startswith("fernet:") and SECRET not in kept["pager"]
    assert sealer(runtime.settings).open(kept["pager"]) == SECRET


def test_a_secret_sealed_with_a_lost_key_is_refused_until_set_again(
    runtime: Runtime, fadmin: Any
) -> None:
    lost = Sealer(MultiFernet([Fernet(Fernet.generate_key())]))
    with runtime.sessions.begin() as session:
        session.add(
            FacilityNotificationSettings(
                facility_id=_facility_id(runtime, "north"),
                settings={"webhooks": [{"name": "pager", "url": "https://pager.north.example/"}]},
                secrets={"pager": lost.seal(SECRET)},  # sealed with a key no longer set
            )
        )
    url = "/api/facilities/north/notifications"
    moved = {"webhooks": [{"name": "pager", "url": "https://pager2.north.example/hook"}]}
    refused = fadmin.put(url, json=moved)
    assert refused.status_code == 409 and "none of the keys" in refused.json()["detail"]
    again = {"webhooks": [{**moved["webhooks"][0], "secret": "a-new-secret-of-twenty-chars"}]}
    assert fadmin.put(url, json=again).status_code == 200
    with runtime.sessions() as session:
        [kept] = session.scalars(select(FacilityNotificationSettings.secrets)).all()
    assert sealer(runtime.settings).open(kept["pager"]) == "a-new-secret-of-twenty-chars"
