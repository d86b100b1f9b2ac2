"""DIMSE status codes the SCP answers with, one name per failure (PS3.4, PS3.7 Annex C).

Handlers return these; an exception is never how a failure reaches the peer. The ranges tell a
sender what to do: A7xx means "out of resources, try again later"; A9xx and Cxxx mean "this
request as it stands will never succeed"; 0124 means "you may not do this here".

| situation                                           | C-STORE | C-FIND | C-MOVE | C-GET |
|-----------------------------------------------------|---------|--------|--------|-------|
| the caller's AE may not use this service            | 0124    | 0124   | 0124   | 0124  |
| data set damaged (structure, pixel data length,     | C000    |        |        |       |
|   frames), UIDs invalid or missing, inflates past   |         |        |        |       |
|   the cap, cannot be parsed                         |         |        |        |       |
| data set's SOP class/instance differ from request,  | A900    |        |        |       |
|   or request's SOP class from the context's         |         |        |        |       |
| same SOP Instance UID, same data set (a re-send)    | 0000    |        |        |       |
| same SOP Instance UID, another data set: keep-first | 0000    |        |        |       |
|   (the default; the copy is discarded and audited)  |         |        |        |       |
| the same, NOCTIS_DUPLICATE_POLICY=reject            | C100    |        |        |       |
| series already filed under another study            | C110    |        |        |       |
| study already filed under another patient           | C111    |        |        |       |
|   (another PatientID or IssuerOfPatientID)          |         |        |        |       |
| object store unavailable                            | A700    |        | sub-op | sub-op|
| facility at or over a quota (comment: which quota,  | A700    |        |        |       |
|   the usage), or its storage pool not configured    |         |        |        |       |
| index unavailable                                   | A700    | A700   | A701   | A701  |
| identifier cannot be decoded                        |         | C310   | C510   | C410  |
| identifier invalid (level, key values, ranges)      |         | A900   | A900   | A900  |
| unexpected error (a bug; logged with traceback)     | C001    | C311   | C511   | C411  |
| (C-ECHO: 0124 if the AE may not echo, C000 for an unexpected error)                        |
| move destination not registered for the facility   |         |        | A801   |       |
| destination refuses the association                 |         |        | A702   |       |
| some sub-operations failed                          |         |        | B000   | B000  |
| every sub-operation failed                          |         |        | A702   | A702  |
| more than 65535 matches to retrieve                 |         |        | A700   | A700  |
| cancelled by the peer                               |         | FE00   | FE00   | FE00  |

C-FIND answers FF01 instead of FF00 for each match when the identifier holds keys the archive
does not support (they come back empty), per PS3.4 C.4.1.1.4. A failure carries an
ErrorComment (64 characters at most) saying what went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WITH_UNSUPPORTED_KEYS = 0xFF01
CANCEL = 0xFE00
SUBOPERATIONS_WARNING = 0xB000

NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
UNABLE_TO_CALCULATE_MATCHES = 0xA701
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
STORE_INTERNAL_ERROR = 0xC001
DUPLICATE_CONFLICT = 0xC100
SERIES_OF_ANOTHER_STUDY = 0xC110
STUDY_OF_ANOTHER_PATIENT = 0xC111

FIND_UNDECODABLE_IDENTIFIER = 0xC310
FIND_INTERNAL_ERROR = 0xC311
FIND_ENCODING_FAILED = 0xC312
GET_UNDECODABLE_IDENTIFIER = 0xC410
GET_INTERNAL_ERROR = 0xC411
MOVE_UNDECODABLE_IDENTIFIER = 0xC510
MOVE_INTERNAL_ERROR = 0xC511

MAX_SUBOPERATIONS = 0xFFFF  # the counts are US: a retrieve cannot announce more

_ERROR_COMMENT_LENGTH = 64  # ErrorComment is LO


@dataclass(frozen=True)
class Answer:
    """A response status and its ErrorComment (empty: none)."""

    status: int
    comment: str = ""

    def for_pynetdicom(self) -> int | Dataset:
        """What a pynetdicom handler returns for this answer."""
        return with_comment(self.status, self.comment) if self.comment else self.status


def with_comment(status: int, comment: str) -> Dataset:
    """A status data set with an ErrorComment, which pynetdicom copies into the response."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = error_comment(comment)
    return ds


def error_comment(text: str) -> str:
    """``text`` as an ErrorComment can hold it."""
    return _printable(text)[:_ERROR_COMMENT_LENGTH]


def _printable(text: str) -> str:
    # The command set has no Specific Character Set: ASCII only, and LO holds no backslash.
    return "".join(c if " " <= c <= "~" and c != "\\" else " " for c in text).strip()
