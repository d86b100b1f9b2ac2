"""The facility registry: who may call the archive, from where, for which services.

The SCP and the API enforce it; `noctis facility apply` and the operator write it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, selectinload

from noctis.index.models import ApplicationEntity, Facility, Study
from noctis.specs.facility import ALL_SERVICES, FacilitySpec

ANY_AE = "*"
DEFAULT_FACILITY = "default"
LOOPBACK_CIDRS = ["127.0.0.0/8", "::1/128"]


class FacilityConflict(ValueError):
    """The spec cannot be applied as it stands (e.g. an AE title another facility owns)."""


class FacilityNameTaken(FacilityConflict):
    """The name is registered to the Facility of another Kubernetes namespace.

    A facility name is one registry entry, one key prefix of its objects and one task queue,
    whatever the namespace of the resource declaring it; so the second namespace is refused
    rather than given the first one's studies or overwriting its modalities.
    """

    def __init__(self, name: str, owner: str, *, holds_studies: bool = False) -> None:
        if holds_studies:
            why = (
                f"facility name {name} still holds the studies of the Facility deleted in "
                f"namespace {owner}: they stay that namespace's (re-create the Facility there); "
                "rename this one"
            )
        else:
            why = (
                f"facility name {name} is taken by the Facility in namespace {owner}: facility "
                "names are unique across namespaces (they key the archive's objects and "
                "DICOMweb's ?facility=); rename this one, or delete that one to free the name"
            )
        super().__init__(why)
        self.name = name
        self.owner = owner


@dataclass(frozen=True)
class Caller:
    """A calling AE the registry accepted, and what it may do."""

    facility_id: int
    facility_name: str
    ae_title: str
    services: frozenset[str]


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int


def check_claim(session: Session, facility: Facility | None, namespace: str) -> None:
    """Raise FacilityNameTaken unless the Facility of ``namespace`` may have this entry: it
    is new, ours, nobody's, or released (disabled when its owner was deleted) and empty. A
    released entry that still holds studies stays its namespace's: another namespace's
    namesake never inherits them (facilities are isolated, and namespaces may be tenants)."""
    if facility is None or facility.namespace in (None, namespace):
        return
    if facility.enabled:
        raise FacilityNameTaken(facility.name, facility.namespace)
    holds_studies = session.scalar(select(exists().where(Study.facility_id == facility.id)))
    if holds_studies:
        raise FacilityNameTaken(facility.name, facility.namespace, holds_studies=True)


def apply_facility(
    session: Session, name: str, spec: FacilitySpec, *, namespace: str | None = None
) -> Facility:
    """Create or update a facility to match the spec, and enable it.

    ``namespace``: the Kubernetes namespace of the Facility resource applying it (the
    operator); the entry becomes that namespace's, unless another namespace's Facility holds
    it (FacilityNameTaken, nothing changed). Without it (`noctis facility apply`), the
    entry's owner stays as it is.
    """
    facility = session.scalar(
        select(Facility)
        .where(Facility.name == name)
        .options(selectinload(Facility.application_entities))
    )
    if namespace is not None:
        check_claim(session, facility, namespace)
    if facility is None:
        facility = Facility(name=name)
        session.add(facility)
    if namespace is not None:
        facility.namespace = namespace
    titles = [ae.ae_title for ae in spec.application_entities]
    if titles:
        taken = session.execute(
            select(ApplicationEntity.ae_title, Facility.name)
            .join(Facility)
            .where(ApplicationEntity.ae_title.in_(titles), Facility.name != name)
        ).all()
        if taken:
            owned = ", ".join(f"{ae} (facility {owner})" for ae, owner in taken)
            raise FacilityConflict(f"AE titles already registered to another facility: {owned}")
    facility.display_name = spec.display_name
    facility.enabled = True
    facility.storage_pool = spec.storage_pool
    facility.quota_bytes = spec.quota.max_bytes
    facility.quota_studies = spec.quota.max_studies
    facility.idp_groups = list(spec.identity_provider_groups)
    facility.spec = spec.model_dump(mode="json", by_alias=True)
    facility.application_entities.clear()
    session.flush()  # free the AE titles before re-adding them
    facility.application_entities.extend(
        ApplicationEntity(
            ae_title=ae.ae_title,
            host=ae.host,
            port=ae.port,
            allowed_cidrs=list(ae.allowed_cidrs),
            services=[s.value for s in ae.services],
            description=ae.description,
        )
        for ae in spec.application_entities
    )
    session.flush()
    return facility


def disable_facility(session: Session, name: str, *, namespace: str | None = None) -> bool:
    """Stop accepting associations and logins for the facility; its studies stay.

    ``namespace``: only if the entry is that namespace's Facility's (or nobody's); another
    namespace's entry is left as it is (FacilityNameTaken). The disabled entry stays with its
    namespace until another namespace's Facility of the name claims it.
    """
    facility = session.scalar(select(Facility).where(Facility.name == name))
    if facility is None:
        return False
    if namespace is not None and facility.namespace not in (None, namespace):
        raise FacilityNameTaken(name, facility.namespace)
    facility.enabled = False
    return True


def ensure_default_facility(session: Session) -> Facility:
    """The embedded default: any calling AE, from loopback only, all services."""
    facility = session.scalar(select(Facility).where(Facility.name == DEFAULT_FACILITY))
    if facility is not None:
        return facility
    facility = Facility(
        name=DEFAULT_FACILITY,
        display_name="Default facility (embedded mode: any AE title, loopback only)",
        spec={},
    )
    claimed = session.scalar(select(ApplicationEntity).where(ApplicationEntity.ae_title == ANY_AE))
    if claimed is None:
        facility.application_entities.append(
            ApplicationEntity(
                ae_title=ANY_AE,
                allowed_cidrs=list(LOOPBACK_CIDRS),
                services=list(ALL_SERVICES),
                description="embedded default: any calling AE from loopback",
            )
        )
    session.add(facility)
    session.flush()
    return facility


def resolve_caller(session: Session, calling_ae: str, address: str) -> Caller | None:
    """The registry entry that admits ``calling_ae`` from ``address``, or None."""
    calling_ae = calling_ae.strip()
    rows = session.execute(
        select(ApplicationEntity, Facility)
        .join(Facility)
        .where(ApplicationEntity.ae_title.in_([calling_ae, ANY_AE]), Facility.enabled.is_(True))
    ).all()
    # An exact registration wins over the wildcard.
    rows.sort(key=lambda row: row[0].ae_title == ANY_AE)
    for ae, facility in rows:
        if address_allowed(address, ae.allowed_cidrs, ae.host):
            return Caller(facility.id, facility.name, calling_ae, frozenset(ae.services))
        if ae.ae_title != ANY_AE:
            return None  # registered, but not from here: do not fall through to the wildcard
    return None


def address_allowed(address: str, cidrs: list[str], host: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if cidrs:
        return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
    if host:
        return ip in _host_addresses(host)
    return True


def _host_addresses(host: str) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return set()
    return {ipaddress.ip_address(info[4][0]) for info in infos}


def move_destination(session: Session, facility_id: int, ae_title: str) -> Destination | None:
    """Where a C-MOVE to ``ae_title`` goes: only to AEs of the caller's own facility."""
    ae = session.scalar(
        select(ApplicationEntity).where(
            ApplicationEntity.facility_id == facility_id,
            ApplicationEntity.ae_title == ae_title.strip(),
        )
    )
    if ae is None or not ae.host or not ae.port:
        return None
    return Destination(ae.ae_title, ae.host, ae.port)


def facility_usage(session: Session, facility_id: int) -> tuple[int, int]:
    """(studies, bytes) stored for the facility."""
    studies, size = session.execute(
        select(func.count(Study.id), func.coalesce(func.sum(Study.size_bytes), 0)).where(
            Study.facility_id == facility_id
        )
    ).one()
    return int(studies), int(size)


def list_facilities(session: Session) -> list[Facility]:
    return list(
        session.scalars(
            select(Facility)
            .options(selectinload(Facility.application_entities))
            .order_by(Facility.name)
        )
    )
