"""When a job the quota refused may wait for the run's own jobs to end, rather than fail it.

Training jobs and transforms wait by the same rules (`stages.training`, `stages.transforms`):
a job waits when SageMaker's message shows the quota would hold it alone and one of the
run's jobs of its kind holds instances, whose end (a state change m5flow hears) starts it.
With none left, nothing would ever start it, so the run fails, but not in the first
minutes after the run's last such job ended, while SageMaker may still count its instances.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from m5flow.exceptions import QuotaNotReleasedError
from m5flow.stages.failure import quota_numbers

# A job in these states still holds its instances, and will end with a state change.
HOLDING = ("InProgress", "Stopping")
# SageMaker may go on counting an ended job's instances against the quota for a while
# ("it can take several minutes", syne-tune/syne-tune#250). Within this long of the run's
# last job's end, a refusal with none of its jobs in progress is left to Lambda's two
# retries, one and three minutes later (AWS's documented delays): the last comes after it,
# and fails the run if it is refused too.
RELEASE_SECONDS = 150.0


@dataclass(frozen=True)
class JobState:
    """A job as SageMaker's Describe tells it: `status` None for a job SageMaker does not
    have, `ended` (epoch seconds) for one that has ended."""

    status: str | None
    ended: float | None = None


@dataclass(frozen=True)
class Refusal:
    """SageMaker refused a job, for `reason`. `waits`: a quota that would hold the job
    alone refused it (SageMaker's words: `message`), so it may wait for the run's own jobs
    to end; `reason` then says why it cannot, for a run with none left."""

    reason: str
    message: str = ""
    waits: bool = False


def job_states(
    sagemaker: Any, kind: Literal["training", "transform"], names: Sequence[str]
) -> dict[str, JobState]:
    """Each of the run's `kind` jobs `names` as SageMaker's Describe tells it, by name."""
    return {name: _job_state(sagemaker, kind, name) for name in names}


def _job_state(sagemaker: Any, kind: str, name: str) -> JobState:
    """Job `name`'s status and end, or no status if SageMaker has no such job. The name is
    the run's own, well-formed, so a ValidationException means just that ("Requested
    resource not found." for a training job, aws/aws-sdk#165; "Could not find requested
    job with name ..." for a transform: neither wording is a contract)."""
    field = f"{kind.capitalize()}Job"
    try:
        job = getattr(sagemaker, f"describe_{kind}_job")(**{f"{field}Name": name})
    except sagemaker.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ValidationException":
            return JobState(None)
        raise
    ended = job.get(f"{kind.capitalize()}EndTime")
    return JobState(str(job[f"{field}Status"]), ended.timestamp() if ended else None)


def holds_alone(message: str, instances: int) -> bool:
    """Whether the quota SageMaker's ResourceLimitExceeded `message` names would hold a job
    of `instances` alone: only its numbers tell, and without them nothing is assumed."""
    quota = quota_numbers(message)
    return quota is not None and quota[0] >= instances


def holding(states: Mapping[str, JobState]) -> bool:
    """Whether a job of the run holds instances: its end will start the jobs that wait."""
    return any(state.status in HOLDING for state in states.values())


def unless_released(refusal: Refusal, states: Mapping[str, JobState]) -> None:
    """Raise for Lambda to try again if the run's last job ended less than
    `RELEASE_SECONDS` ago: SageMaker may still count its instances."""
    ended = [state.ended for state in states.values() if state.ended is not None]
    since = time.time() - max(ended) if ended else None
    if since is not None and since < RELEASE_SECONDS:
        raise QuotaNotReleasedError(
            f"{refusal.reason} (the run's last job ended {since:.0f} s before, and SageMaker "
            "may still count its instances: the step is tried again, and fails the run if "
            "the quota still refuses it)"
        )
