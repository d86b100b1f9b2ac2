"""Every route of the reading workflow is guarded: enumerated from the app itself (so a route
added tomorrow is checked too), each method asked anonymously with dummy path parameters gets
401 (REST) or a redirect to the login page (pages), before anything else is looked at."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from support.web import client_for

WORKFLOW_API = re.compile(
    r"^/api/("
    r"worklist|orders|report-templates|report-snippets|notifications|me/notifications"
    r"|facilities/\{[^}]+\}/notifications"
    r"|studies/\{[^}]+\}/\{[^}]+\}/(results|attachments|report)"
    r")(/|$)"
)
PAGES = re.compile(r"^/ui($|/(?!static/))")
PARAMETER = re.compile(r"\{([^}:]+)(:[^}]+)?\}")
# Each part of the workflow must show up: a filter that stops matching fails here.
EXPECTED_GROUPS = (
    "/api/worklist",
    "/api/orders",
    "/api/report-templates",
    "/api/report-snippets",
    "/api/notifications",
    "/api/me/notifications",
    "/api/facilities/1/notifications",
    "/api/studies/1/1/results",
    "/api/studies/1/1/report",
    "/api/studies/1/1/attachments",
    "/ui/worklist",
    "/ui/reports/",
    "/ui/orders",
    "/ui/notifications",
)


def workflow_requests(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path with dummy parameters) of every workflow route and method."""
    found = []
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if not (WORKFLOW_API.match(path) or PAGES.match(path)):
            continue
        concrete = PARAMETER.sub("1", path)
        found += [(method, concrete) for method in sorted(route.methods or ()) if method != "HEAD"]
    return found


def test_every_workflow_route_refuses_an_anonymous_caller(app: FastAPI) -> None:
    asked = workflow_requests(app)
    for group in EXPECTED_GROUPS:
        assert any(path.startswith(group) for _, path in asked), f"no route under {group}"
    assert len(asked) > 60

    anonymous = client_for(app)
    unguarded = []
    for method, path in asked:
        answer = anonymous.request(
            method,
            path,
            headers={"Sec-Fetch-Site": "same-origin"},  # past the cross-origin guard
            follow_redirects=False,
        )
        if path.startswith("/api/"):
            refused = answer.status_code == 401
        else:
            location = answer.headers.get("location", "")
            refused = answer.status_code in (302, 303, 307) and location.startswith("/login")
        if not refused:
            unguarded.append(f"{method} {path}: {answer.status_code} {answer.text[:120]}")
    assert not unguarded, "\n".join(unguarded)
