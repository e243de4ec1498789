"""Errors of the m5flow core, one line each on when they are raised."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from m5flow.notifications import Stage


class M5flowError(Exception):
    """Base class of every error the core raises on purpose."""


class InputRejectedError(M5flowError):
    """Raised when an upload is malformed; carries one readable reason per problem."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("; ".join(self.reasons))


class RunFailedError(M5flowError):
    """Raised when a run cannot continue (a failed job, an inconsistent manifest)."""

    def __init__(self, stage: Stage, reason: str) -> None:
        self.stage = stage
        self.reason = reason
        super().__init__(f"{stage}: {reason}")


class ScoringError(M5flowError, ValueError):
    """Raised when a forecast cannot be scored: misaligned ids, wrong shapes, no weights."""


class QuotaNotReleasedError(M5flowError):
    """Raised so that Lambda tries the step again: a job of the run ended moments ago, and
    SageMaker may still count its instances against the quota that refused the next."""
