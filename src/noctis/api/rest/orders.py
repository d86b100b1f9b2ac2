"""Orders over REST (``/api/orders``): scheduled procedures for the Modality Worklist.

Technologists, facility administrators and administrators (``ORDER_ROLES``) create, edit and
cancel orders; those and radiologists (``WORKLIST_ROLES``) read them. Everyone sees the orders
of the facilities they may see only: another facility's order is 404, as its studies are.
Every change is audited in its own transaction (`noctis.core.orders`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis.api.audit import actor_type
from noctis.api.rest.deps import SessionDep
from noctis.api.security import Principal, PrincipalDep, client_address
from noctis.core.orders import (
    OrderChanges,
    OrderError,
    OrderFields,
    OrderStatus,
    cancel_order,
    create_order,
    linked_study_uid,
    list_orders,
    order_document,
    update_order,
)
from noctis.core.roles import ORDER_ROLES, WORKLIST_ROLES
from noctis.core.workflow import Actor
from noctis.index.models import Facility
from noctis.index.orders import Order

router = APIRouter(tags=["orders"])

ORDER_READ_ROLES = ORDER_ROLES | WORKLIST_ROLES


def _reader(principal: PrincipalDep) -> Principal:
    if principal.role not in ORDER_READ_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="your role may not see orders")
    return principal


def _writer(principal: PrincipalDep) -> Principal:
    if principal.role not in ORDER_ROLES:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="your role may not manage orders")
    return principal


ReaderDep = Annotated[Principal, Depends(_reader)]
WriterDep = Annotated[Principal, Depends(_writer)]


class NewOrder(OrderFields):
    facility: str | None = Field(
        None, description="the facility's name; may be left out by a user of one facility"
    )


class Cancellation(BaseModel):
    reason: str = Field("", max_length=255)


def actor_of(principal: Principal, request: Request) -> Actor:
    return Actor(principal.subject, actor_type(principal), client_address(request))


def facility_for(session: Session, principal: Principal, name: str | None) -> Facility:
    """The facility an order goes to: named, or the caller's only one (404 if the caller may
    not see it, as if it did not exist)."""
    if name is None:
        visible = principal.facility_ids
        if visible is None or len(visible) != 1:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, detail="name the order's facility"
            )
        facility = session.get(Facility, next(iter(visible)))
    else:
        facility = session.scalars(select(Facility).where(Facility.name == name)).first()
    if facility is None or not principal.can_read(facility.id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no facility {name!r}")
    return facility


def visible_order(session: Session, principal: Principal, order_id: int) -> Order:
    order = session.get(Order, order_id)
    if order is None or not principal.can_read(order.facility_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no order {order_id}")
    return order


def document(session: Session, order: Order) -> dict[str, Any]:
    body = order_document(order)
    body["facility"] = session.scalar(select(Facility.name).where(Facility.id == order.facility_id))
    study = linked_study_uid(session, order)
    body["study"] = (
        {"study_instance_uid": study, "viewer": f"/viewer?StudyInstanceUIDs={study}"}
        if study
        else None
    )
    return body


@router.post("/orders", status_code=status.HTTP_201_CREATED)
def create(
    body: NewOrder, principal: WriterDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    """Schedule a procedure: it is on the facility's Modality Worklist at once."""
    facility = facility_for(session, principal, body.facility)
    fields = OrderFields.model_validate(body.model_dump(exclude={"facility"}))
    try:
        order = create_order(session, facility.id, fields, actor=actor_of(principal, request))
    except OrderError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return document(session, order)


@router.get("/orders")
def search(
    principal: ReaderDep,
    session: SessionDep,
    facility: Annotated[str | None, Query(description="facility name")] = None,
    order_status: Annotated[OrderStatus | None, Query(alias="status")] = None,
    modality: str | None = None,
    station: Annotated[str | None, Query(description="scheduled station AE title")] = None,
    date_from: Annotated[str | None, Query(pattern=r"^\d{8}$")] = None,
    date_to: Annotated[str | None, Query(pattern=r"^\d{8}$")] = None,
    patient_id: str | None = None,
    accession_number: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Orders of the facilities the caller may see, by scheduled time."""
    facility_ids = principal.facility_ids
    if facility is not None:
        facility_ids = frozenset({facility_for(session, principal, facility).id})
    orders = list_orders(
        session,
        facility_ids=facility_ids,
        status=order_status.value if order_status else None,
        modality=modality,
        station=station,
        date_from=date_from,
        date_to=date_to,
        patient_id=patient_id,
        accession_number=accession_number,
        limit=limit,
        offset=offset,
    )
    return [document(session, order) for order in orders]


@router.get("/orders/{order_id}")
def get(order_id: int, principal: ReaderDep, session: SessionDep) -> dict[str, Any]:
    return document(session, visible_order(session, principal, order_id))


@router.patch("/orders/{order_id}")
def edit(
    order_id: int,
    changes: OrderChanges,
    principal: WriterDep,
    session: SessionDep,
    request: Request,
) -> dict[str, Any]:
    """Change a scheduled order (409 once a modality started it, or it ended)."""
    order = visible_order(session, principal, order_id)
    try:
        update_order(session, order, changes, actor=actor_of(principal, request))
    except OrderError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return document(session, order)


@router.post("/orders/{order_id}/cancel")
def cancel(
    order_id: int,
    principal: WriterDep,
    session: SessionDep,
    request: Request,
    body: Cancellation | None = None,
) -> dict[str, Any]:
    """Withdraw an order: off the worklist (409 once completed or discontinued)."""
    order = visible_order(session, principal, order_id)
    reason = body.reason if body is not None else ""
    try:
        cancel_order(session, order, actor=actor_of(principal, request), reason=reason)
    except OrderError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return document(session, order)
