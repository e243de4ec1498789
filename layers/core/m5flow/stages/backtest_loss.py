"""A backtest twin that cannot train or forecast costs the run its backtest, not its forecast.

The twins (`ModelShards.backtest`) forecast only the last sales days, to score a run that
has no truth; the forecast never reads them. So when one fails (its job Failed or Stopped,
or SageMaker refused it: a quota that holds the forecasting models' jobs but not nine at
once), the run goes on. `Backtest Lost` is announced once, with the reason; the other
twins' jobs are stopped, since a backtest with a week missing cannot be scored; and the
assembly counts the twins as done and says why there is no backtest score.

A twin can be lost after every other model's transform has completed, when no completion
is left to assemble. So `Backtest Lost` also tells the assemble step to look again (its
rule in template.yaml), and its record in the run's ledger is the mark the fan-in reads.
Nothing here imports a dataframe library: the publish step ships without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger

from m5flow import naming
from m5flow.manifest import Manifest
from m5flow.notifications import FORECAST_READY, EventPublisher
from m5flow.stages.failure import (
    announce_job_failure,
    job_failure_reason,
    stop_jobs,
    stop_other_models,
)
from m5flow.storage import Storage

logger = Logger(child=True)
BACKTEST_LOST = "backtest-lost"  # the announcement's name in the run's ledger


def lose_backtest(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    *,
    model: str,
    stage: str,
    reason: str,
    failure: str,
    transforms: bool = True,
) -> str:
    """Twin `model` failed at `stage`: announce `Backtest Lost` once and stop the other
    twins' jobs, on every delivery, as `stop_other_models` does: their training jobs, and
    with `transforms` their transform jobs (before training none exists, and the
    start-training step may stop training jobs only). Returns what it cost, in words:
    "backtest lost", or "the run had ended".

    A run that has ended says nothing more (`failure`: its `failure_name`): its `Run Failed`
    stopped every job already, and its `Forecast Ready` needed every twin done or lost.
    """
    run = manifest.run_id
    detail = {"run_id": run, "dataset": manifest.dataset, "stage": stage, "model": model,
              "reason": reason, "manifest": storage.uri(naming.manifest_key(run))}  # fmt: skip
    if publisher.record(run, failure) or publisher.record(run, FORECAST_READY):
        logger.warning("the run has ended; a lost backtest is logged only", extra=detail)
        return "the run had ended"
    logger.error("backtest lost; the forecast goes on without it", extra=detail)
    publisher.publish("Backtest Lost", detail, once=BACKTEST_LOST)
    twins = [m.name for m in manifest.models if m.backtest and m.name != model]
    names = [naming.job_name(run, name) for name in twins]
    stop_jobs(sagemaker, training=names, transform=names if transforms else [])
    return "backtest lost"


def lost_backtest(publisher: EventPublisher, run: str) -> str | None:
    """Why the run's backtest was lost ("backtest twin h7-bt failed at training: ..."), or
    None if it was not, from one read of its record (written before the event is sent).

    A record left unsent is settled too: its sender may have died before sending, and the
    steps that find the loss skip the work that would have sent it again, so without this
    the event, the only trigger of a run whose last pending job was the twin, would be lost.
    """
    record = publisher.record(run, BACKTEST_LOST)
    if record is None:
        return None
    if not record.get("sent"):
        publisher.settle(run, BACKTEST_LOST)  # sends it if its sender was presumed dead
    detail = record.get("detail") or {}
    return (
        f"backtest twin {detail.get('model')} failed at {detail.get('stage')}: "
        f"{detail.get('reason')}"
    )


def job_failed(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    job: Mapping[str, Any],
    *,
    kind: str,
    model: str,
    failure: str,
) -> str:
    """A job of `model` ended Failed or Stopped (`job`: its state change's detail, `kind`:
    "training" or "transform"). A twin's costs the backtest; any other model's the run,
    whose other jobs are stopped. Returns what it cost, in words."""
    if manifest.model(model).backtest:
        reason = job_failure_reason(job, kind, manifest.hyperparameters)
        return lose_backtest(storage, sagemaker, publisher, manifest, model=model,
                             stage=kind, reason=reason, failure=failure)  # fmt: skip
    announce_job_failure(publisher, job, kind=kind, run=manifest.run_id, dataset=manifest.dataset,
                         once=failure, overrides=manifest.hyperparameters)  # fmt: skip
    stop_other_models(sagemaker, manifest, model)
    return "run failed"
