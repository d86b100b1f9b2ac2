"""The ``/ui`` pages' shell: login first, then the worklist; our own stylesheet and script."""

from __future__ import annotations

from typing import Any


def test_a_browser_without_a_session_is_sent_to_login_and_back(clients: Any) -> None:
    page = clients(None).get("/ui", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fui"
    signed_in = clients("rad_north").get("/ui", follow_redirects=False)
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/ui/worklist")


def test_the_stylesheet_and_script_are_served_and_nothing_else(clients: Any) -> None:
    anonymous = clients(None)
    css = anonymous.get("/ui/static/noctis.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert (
        anonymous.get("/ui/static/noctis.js").headers["content-type"].startswith("text/javascript")
    )
    for probe in ("/ui/static/render.py", "/ui/static/..%2Frender.py", "/ui/static/.x.css"):
        assert anonymous.get(probe).status_code == 404, probe


def test_each_role_is_led_only_to_pages_it_may_open(clients: Any) -> None:
    """A referring physician has no worklist or orders (403): /ui leads to the notifications,
    where final reports are announced, and no link of the pages leads to a refusal."""
    home = clients("ref_north").get("/ui", follow_redirects=False)
    assert (home.status_code, home.headers["location"]) == (303, "/ui/notifications")
    page = clients("ref_north").get("/ui/notifications")
    assert page.status_code == 200
    for refused in ('href="/ui/worklist"', 'href="/ui/orders"'):
        assert refused not in page.text, refused
    missing = clients("ref_north").get("/ui/reports/north/1.2.3.4")
    assert missing.status_code == 404 and 'href="/ui/worklist"' not in missing.text
    radiologist = clients("rad_north").get("/ui/notifications").text
    assert 'href="/ui/worklist"' in radiologist and 'href="/ui/orders"' in radiologist
