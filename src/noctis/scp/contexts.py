"""Presentation contexts: which SOP classes and transfer syntaxes the SCP negotiates.

Storage accepts every storage SOP class pynetdicom knows plus the retired and newer ones in
pydicom's UID dictionary that pynetdicom does not (Ultrasound Image Storage (Retired), the
trial SR classes, DICOS...), each with every transfer syntax: the archive stores what it
receives as received, so it never needs to decode pixel data to accept an instance.
pynetdicom's own ``StoragePresentationContexts`` carry only the uncompressed syntaxes and would
refuse every compressed file.

A SOP class pynetdicom does not know is accepted at negotiation and then aborted at C-STORE
("No supported service class"), so `register_storage_classes` registers those with
pynetdicom's Storage service class first.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, register_uid
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from noctis.core.modality_worklist import MODALITY_WORKLIST_FIND

# Query/retrieve identifiers and commitment requests are small: no reason to negotiate
# anything but these.
QUERY_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
# pynetdicom picks the first syntax of the acceptor's list that the requestor proposed, so this
# order is the archive's preference when one context offers several: the uncompressed ones
# first (no codec work on either side), then every other syntax pynetdicom knows.
STORAGE_SYNTAXES = tuple(
    dict.fromkeys(
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
        + [str(uid) for uid in ALL_TRANSFER_SYNTAXES]
    )
)

# pynetdicom generates its SOP class names at import time, out of a type checker's sight.
VERIFICATION = "1.2.840.10008.1.1"
STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
FIND_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.1": "PATIENT",  # Patient Root Q/R Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.1": "STUDY",  # Study Root Q/R Information Model - FIND
}
MOVE_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.2": "PATIENT",
    "1.2.840.10008.5.1.4.1.2.2.2": "STUDY",
}
# Served through pynetdicom's service classes on both DIMSE paths (noctis.scp.modality_worklist,
# noctis.scp.mpps).
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"
GET_MODELS = {
    "1.2.840.10008.5.1.4.1.2.1.3": "PATIENT",
    "1.2.840.10008.5.1.4.1.2.2.3": "STUDY",
}

# Storage-like names in the UID dictionary that are not C-STORE of a patient's instance.
_NOT_INSTANCE_STORAGE = ("Storage Commitment", "Media Storage Directory")
# Proposed contexts per association are capped at 128 by the context ID's range (odd 1..255).
MAX_REQUESTED_CONTEXTS = 128


@cache
def storage_sop_classes() -> tuple[str, ...]:
    """Every storage SOP class the SCP accepts, pynetdicom's and the ones it lacks."""
    known = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    return tuple(known + list(_unregistered_storage_classes()))


def _unregistered_storage_classes() -> dict[str, str]:
    """UID -> keyword of storage classes pynetdicom has no service class for."""
    known = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    found: dict[str, str] = {}
    for uid, (name, kind, _info, _retired, keyword) in UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name or uid in known:
            continue
        if any(marker in name for marker in _NOT_INSTANCE_STORAGE):
            continue
        if _is_non_patient_object(uid):
            continue  # hanging protocols, colour palettes... have no patient or study
        found[uid] = keyword
    return found


def _is_non_patient_object(uid: str) -> bool:
    # pynetdicom files these under another service (Non-Patient Object Storage and the like);
    # a UID it does not know maps to the bare ServiceClass (StorageServiceClass once we
    # registered it).
    return uid_to_service_class(uid) not in (ServiceClass, StorageServiceClass)


@cache
def register_storage_classes() -> int:
    """Teach pynetdicom the storage classes it lacks; how many were registered."""
    missing = _unregistered_storage_classes()
    import pynetdicom.sop_class as sop_class_module

    for uid, keyword in missing.items():
        if not hasattr(sop_class_module, keyword):
            register_uid(uid, keyword, StorageServiceClass)
    return len(missing)


def scp_contexts() -> list[PresentationContext]:
    """Everything the SCP accepts.

    Storage contexts accept both roles, so a C-GET requestor that proposes to be the storage
    SCP (role selection) gets that role, and a plain C-STORE sender keeps the default roles.
    """
    register_storage_classes()
    contexts = [build_context(VERIFICATION, list(QUERY_SYNTAXES))]
    # Storage commitment accepts role selection: a requester that proposes the SCP role for
    # itself gets its N-EVENT-REPORT on the same association (noctis.scp.commitment).
    commitment = build_context(STORAGE_COMMITMENT_PUSH_MODEL, list(QUERY_SYNTAXES))
    commitment.scu_role = True
    commitment.scp_role = True
    contexts.append(commitment)
    for model in (
        *FIND_MODELS,
        *MOVE_MODELS,
        *GET_MODELS,
        MODALITY_WORKLIST_FIND,
        MODALITY_PERFORMED_PROCEDURE_STEP,
    ):
        contexts.append(build_context(model, list(QUERY_SYNTAXES)))
    for sop_class in storage_sop_classes():
        context = build_context(sop_class, list(STORAGE_SYNTAXES))
        context.scu_role = True
        context.scp_role = True
        contexts.append(context)
    return contexts


def requested_storage_contexts(
    pairs: Iterable[tuple[str, str]], *, fallback: bool = True
) -> list[list[PresentationContext]]:
    """Contexts to propose for sending instances of these (SOP class, transfer syntax) pairs.

    Each pair gets a context of its own, so the peer accepts or refuses exactly the syntax the
    instance is stored in (a context listing several syntaxes lets the peer pick another and
    forces a conversion). With ``fallback``, each SOP class also gets one context offering the
    uncompressed syntaxes, used only when the peer refuses the stored one. Returned in groups
    of at most 128 contexts: one association per group.
    """
    unique = list(dict.fromkeys((str(sop), str(ts)) for sop, ts in pairs))
    contexts: list[PresentationContext] = []
    for sop_class, syntax in unique:
        contexts.append(build_context(sop_class, [syntax]))
    if fallback:
        for sop_class in dict.fromkeys(sop for sop, _ in unique):
            contexts.append(
                build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            )
    return _groups(contexts, unique, fallback)


def _groups(
    contexts: list[PresentationContext], pairs: list[tuple[str, str]], fallback: bool
) -> list[list[PresentationContext]]:
    if len(contexts) <= MAX_REQUESTED_CONTEXTS:
        return [contexts]
    # Too many for one association: split the pairs, keeping each class's fallback beside it.
    step = MAX_REQUESTED_CONTEXTS // 2 if fallback else MAX_REQUESTED_CONTEXTS
    groups = []
    for start in range(0, len(pairs), step):
        groups.extend(requested_storage_contexts(pairs[start : start + step], fallback=fallback))
    return groups
