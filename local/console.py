"""What the command line prints: each event and handler result in words (`describe`,
`said`), as whole lines, from any thread, to a reader that may leave."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from m5flow.jobs import one_line
from m5flow.naming import OVERRIDES_FILE, TRUTH_FILE
from m5flow.notifications import SOURCE


def print_line(text: str) -> None:
    """Print one console line in a single write: events, job progress and the command's own
    lines come from several threads, and `print` writes the text and its newline apart,
    so two lines could share one. A reader that went away (`| head`) ends the echo quietly:
    the run goes on, as it would with its output discarded."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        discard_stdout()


def discard_stdout() -> None:
    """Point stdout at devnull once its reader has gone, as the Python docs advise, so that
    neither a later line nor the flush at exit raises BrokenPipeError again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def describe(event: dict[str, Any]) -> str:
    """One line a person can read for any event on the bus."""
    detail = event.get("detail", {})
    kind = f"{event.get('source')} | {event.get('detail-type')}"
    if event.get("source") == "aws.s3":
        return f"{kind}: s3://{detail['bucket']['name']}/{detail['object']['key']}"
    if event.get("source") == "aws.sagemaker":
        name = detail.get("TrainingJobName") or detail.get("TransformJobName")
        status = detail.get("TrainingJobStatus") or detail.get("TransformJobStatus")
        secondary = f" ({detail['SecondaryStatus']})" if detail.get("SecondaryStatus") else ""
        # The container's traceback, once per failed job, buried the story; it stays whole in
        # the job's log (its path was said) and in the function's ERROR log.
        reason = f": {one_line(detail['FailureReason'])}" if detail.get("FailureReason") else ""
        return f"{kind}: {name} {status}{secondary}{reason}"
    if event.get("source") == SOURCE and "summary" in detail:
        return f"{kind}: {detail['summary']}"  # what the notification e-mail says
    return f"{kind}: {json.dumps(detail, default=str)}"


# What a step's result field holds when it made something, and what its absence means.
_MADE = {
    "StartTrainingFunction": (
        "training_jobs", "created training jobs {}",
        "created no training job (an earlier delivery did, or the run has failed)",
    ),
    "PublishModelFunction": (
        "transform_job", "created transform job {}",
        "created no transform job (an earlier delivery did, or the run has failed)",
    ),
}  # fmt: skip


def said(function: str, result: Any) -> str:
    """A handler's result in words: its JSON alone ("submission": null) reads like an error
    where it only means another delivery or a sibling does the work."""
    if not isinstance(result, dict):
        return json.dumps(result, default=str)
    run = result.get("run_id")
    words = {
        ("ShardFunction", "started"): f"started run {run}",
        ("ShardFunction", "waiting"): f"{result.get('dataset')}: waiting for all three inputs",
        ("ShardFunction", "duplicate"): f"these files already made run {run}: nothing to start",
        ("ShardFunction", "rejected"): (f"{result['dataset']}: " if result.get("dataset") else "")
        + "refused (Input Rejected)",
        ("ShardFunction", "refused"): f"refused before (run {run}): not announced again",
        ("ShardFunction", "ignored"): (
            f"starts nothing: not one of the three inputs ({OVERRIDES_FILE} and {TRUTH_FILE} "
            "are read with them)"
        ),
        ("ShardFunction", "superseded"): "an input was replaced while read: its event goes on",
    }.get((function, str(result.get("status"))))
    if function in _MADE:
        field, made, nothing = _MADE[function]
        if field in result:
            value = result[field]
            shown = ", ".join(value) if isinstance(value, list) else value
            words = made.format(shown) if value else nothing
    return words or result.get("note") or json.dumps(result, default=str)
