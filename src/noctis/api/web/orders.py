"""The orders page (``/ui/orders``): the caller's facilities' orders, and a form to schedule
one (technologists, facility administrators, administrators). Plain HTML forms posting back
here; the same rules as ``/api/orders`` (`noctis.core.orders`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.api.rest.deps import SessionDep
from noctis.api.rest.orders import ORDER_READ_ROLES, actor_of, document, visible_order
from noctis.api.security import Principal
from noctis.api.web.render import PagePrincipalDep, render
from noctis.core.orders import (
    OrderError,
    OrderFields,
    OrderStatus,
    cancel_order,
    create_order,
    list_orders,
)
from noctis.core.roles import ORDER_ROLES
from noctis.index.models import Facility

router = APIRouter(include_in_schema=False)

FORM_FIELDS = tuple(OrderFields.model_fields)
SHOWN = 200


def _facilities(session: Session, principal: Principal) -> list[Facility]:
    statement = select(Facility).where(Facility.enabled.is_(True)).order_by(Facility.name)
    if principal.facility_ids is not None:
        statement = statement.where(Facility.id.in_(sorted(principal.facility_ids)))
    return list(session.scalars(statement))


def _page(
    request: Request,
    principal: Principal,
    session: Session,
    *,
    status_code: int = 200,
    error: str = "",
    form: dict[str, str] | None = None,
) -> Response:
    if principal.role not in ORDER_READ_ROLES:
        return render(
            request,
            "orders_list.html",
            principal,
            status_code=403,
            allowed=False,
            error="Your role may not see orders.",
        )
    wanted = request.query_params.get("status", OrderStatus.SCHEDULED.value)
    facilities = _facilities(session, principal)
    orders = list_orders(
        session,
        facility_ids=principal.facility_ids,
        status=wanted if wanted in {s.value for s in OrderStatus} else None,
        limit=SHOWN,
    )
    return render(
        request,
        "orders_list.html",
        principal,
        status_code=status_code,
        allowed=True,
        may_write=principal.role in ORDER_ROLES,
        orders=[document(session, order) for order in orders],
        statuses=[s.value for s in OrderStatus],
        wanted=wanted,
        facilities=[f.name for f in facilities],
        form=form or {"priority": "routine"},
        error=error,
    )


@router.get("/ui/orders")
def orders_page(request: Request, principal: PagePrincipalDep, session: SessionDep) -> Response:
    return _page(request, principal, session)


@router.post("/ui/orders")
async def schedule(request: Request, principal: PagePrincipalDep, session: SessionDep) -> Response:
    submitted = {key: str(value) for key, value in (await request.form()).items()}
    if principal.role not in ORDER_ROLES:
        return _page(
            request, principal, session, status_code=403, error="Your role may not schedule orders."
        )
    fields_given = {k: v for k, v in submitted.items() if k in FORM_FIELDS}
    facilities = {f.name: f for f in _facilities(session, principal)}
    if len(facilities) == 1:
        facility: Facility | None = next(iter(facilities.values()))
    else:
        facility = facilities.get(submitted.get("facility", ""))
    if facility is None:
        return _page(
            request,
            principal,
            session,
            status_code=422,
            error="Choose the order's facility.",
            form=submitted,
        )
    try:
        fields = OrderFields.model_validate(fields_given)
        create_order(session, facility.id, fields, actor=actor_of(principal, request))
    except ValidationError as exc:
        return _page(
            request, principal, session, status_code=422, error=_explain(exc), form=submitted
        )
    except OrderError as exc:  # refused before anything was written
        return _page(request, principal, session, status_code=409, error=str(exc), form=submitted)
    return RedirectResponse("/ui/orders", status_code=303)


@router.post("/ui/orders/{order_id}/cancel")
def cancel(
    order_id: int, request: Request, principal: PagePrincipalDep, session: SessionDep
) -> Response:
    if principal.role not in ORDER_ROLES:
        return _page(
            request, principal, session, status_code=403, error="Your role may not cancel orders."
        )
    try:
        order = visible_order(session, principal, order_id)
        cancel_order(session, order, actor=actor_of(principal, request))
    except HTTPException:
        return _page(request, principal, session, status_code=404, error=f"No order {order_id}.")
    except OrderError as exc:
        return _page(request, principal, session, status_code=409, error=str(exc))
    return RedirectResponse("/ui/orders", status_code=303)


def _explain(error: ValidationError) -> str:
    parts: list[Any] = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"])
        parts.append(f"{where.replace('_', ' ')}: {problem['msg']}")
    return "; ".join(parts)
