"""Why a reconcile stopped short: the spec is invalid, or something outside it blocks us."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class SpecInvalid(Exception):
    """The spec cannot be acted on until the user changes it (Ready=False, no retry)."""

    reason = "InvalidSpec"


class Blocked(Exception):
    """Something outside the spec is in the way; retried after ``delay`` seconds."""

    def __init__(self, reason: str, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.delay = delay


def parse_spec(model: type[M], spec: object) -> M:
    """Validate a CR's spec with the same model the CRD schema was generated from."""
    try:
        return model.model_validate(dict(spec or {}))  # type: ignore[call-overload]
    except ValidationError as exc:
        raise SpecInvalid(describe(exc)) from exc


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(["spec", *(str(p) for p in error["loc"])])
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
