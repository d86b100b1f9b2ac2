"""Presentation contexts: what the SCP accepts and what it proposes when it sends."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSNearLossless,
    MRImageStorage,
    RLELossless,
)

from noctis.scp.contexts import (
    MAX_REQUESTED_CONTEXTS,
    requested_storage_contexts,
    scp_contexts,
    storage_sop_classes,
)

RETIRED_US = "1.2.840.10008.5.1.4.1.1.6"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
HANGING_PROTOCOL = "1.2.840.10008.5.1.4.38.1"
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"


def test_storage_classes_include_retired_and_exclude_non_instance_storage() -> None:
    classes = set(storage_sop_classes())
    assert {CTImageStorage, MRImageStorage, RETIRED_US} <= classes
    assert "1.2.840.10008.5.1.4.1.1.3" in classes  # US Multi-frame (Retired)
    assert not {STORAGE_COMMITMENT, HANGING_PROTOCOL, MEDIA_DIRECTORY} & classes


def test_scp_accepts_every_syntax_for_storage_and_both_roles() -> None:
    contexts = {str(cx.abstract_syntax): cx for cx in scp_contexts()}
    ct = contexts[CTImageStorage]
    assert {JPEG2000, JPEGLSNearLossless, RLELossless} <= set(map(str, ct.transfer_syntax))
    # pynetdicom takes the acceptor's first syntax the requestor offers: uncompressed first.
    assert ct.transfer_syntax[0] == ExplicitVRLittleEndian
    assert ct.scu_role and ct.scp_role  # C-GET requestors may be the storage SCP
    assert RETIRED_US in contexts


def test_requested_contexts_one_per_stored_syntax_plus_fallback() -> None:
    [group] = requested_storage_contexts(
        [(CTImageStorage, JPEG2000), (CTImageStorage, JPEG2000), (MRImageStorage, RLELossless)]
    )
    proposed = [(str(cx.abstract_syntax), list(map(str, cx.transfer_syntax))) for cx in group]
    assert proposed == [
        (CTImageStorage, [JPEG2000]),
        (MRImageStorage, [RLELossless]),
        (CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        (MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
    ]


def test_many_pairs_are_split_into_associations_of_at_most_128_contexts() -> None:
    pairs = [(f"1.2.826.0.1.3680043.10.{n}", ExplicitVRLittleEndian) for n in range(300)]
    groups = requested_storage_contexts(pairs)
    assert all(len(group) <= MAX_REQUESTED_CONTEXTS for group in groups)
    exact = [
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for group in groups
        for cx in group
        if len(cx.transfer_syntax) == 1
    ]
    assert sorted(exact) == sorted(pairs)
    for group in groups:  # each class's fallback travels with it
        exact_classes = {str(cx.abstract_syntax) for cx in group if len(cx.transfer_syntax) == 1}
        fallback_classes = {str(cx.abstract_syntax) for cx in group if len(cx.transfer_syntax) > 1}
        assert exact_classes == fallback_classes
