"""Starting a model's Batch Transform, and what becomes of one SageMaker refuses.

Two steps start transforms: the publish step a model's first (once its training completes),
the assemble step each later pass of the recursive model (m5flow.recursive). Both must word
a refusal the same way, stop the other models' jobs, and stop their own job when a sibling
failed the run while they created it. Nothing here imports a dataframe library: the publish
step ships without one (m5flow.manifest).

A transform the quota would hold alone, refused while the run's other transforms hold the
instances, waits (`stages.quota_wait`): `Transform Waiting` announces it, its record in the
run's ledger is what marks it, and the end of each of the run's transforms, at the assemble
step, starts the ones that wait (`start_waiting_transforms`). The fan-in counts a model whose
transform waits as pending, as it does one still transforming.
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools import Logger

from m5flow import jobs, naming
from m5flow.manifest import Manifest, ModelShards
from m5flow.notifications import FORECAST_READY, EventPublisher
from m5flow.stages.backtest_loss import lose_backtest, lost_backtest
from m5flow.stages.failure import (
    fail_run,
    is_refusal,
    other_models_jobs,
    quota_reason,
    refusal_reason,
    stop_jobs,
    transform_jobs,
    waiting_reason,
)
from m5flow.stages.quota_wait import (
    HOLDING,
    JobState,
    Refusal,
    holding,
    holds_alone,
    job_states,
    unless_released,
)
from m5flow.storage import Storage

logger = Logger(child=True)
Outcome = Literal["created", "existed", "waiting", "refused", "stopped"]
# A transform that waits for the quota, by its `Transform Waiting` in the run's ledger:
# this prefix and the pass's name (`naming.pass_name`).
WAITING = "transform-waiting-"


def start_transform(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    model: ModelShards,
    settings: jobs.JobSettings,
    *,
    number: int,
    stage: str,
    failure: str,
    artifact: str | None = None,
) -> Outcome:
    """Create the transform job of the model's pass `number` (0: its only, or first).

    "created" or "existed" (an earlier delivery created it): the caller announces it.
    "waiting": the quota refused it while the run's other transforms hold the instances; it
    is announced as `Transform Waiting` (with `artifact`, the model's, if given), and the
    step that starts it announces it then.
    "refused": SageMaker refused the job (a quota, or a malformed request), and the run
    failed at `stage` with the reason (a backtest twin's: the run lost its backtest).
    "stopped": a sibling failed the run while this job was being created (its stop came
    before the job existed), or a twin's backtest was lost meanwhile, so it was stopped here.
    """
    request = jobs.transform_request(manifest, model, settings, number)
    outcome = _create(sagemaker, manifest, model, settings, request)
    if isinstance(outcome, Refusal):
        states = _states(sagemaker, manifest) if outcome.waits else {}
        if outcome.waits and holding(states):
            if _run_over(publisher, manifest, model, failure):
                # A sibling ended it meanwhile, and its stops leave jobs stopping, which
                # hold the instances: nothing waits, and nothing is said after its end.
                return "stopped"
            _announce_waiting(publisher, manifest, model, number, outcome, artifact)
            # The transforms that held the quota may all have ended between the refusal
            # and the record, their ends finding nothing waiting: look once more, after them.
            start_waiting_transforms(storage, sagemaker, publisher, manifest, settings,
                                     stage=stage, failure=failure)  # fmt: skip
            return "waiting"
        if outcome.waits and not model.backtest:
            unless_released(outcome, states)
        fail_model(storage, sagemaker, publisher, manifest, model.name, stage, outcome.reason,
                   failure)  # fmt: skip
        return "refused"
    if _stopped(sagemaker, publisher, manifest, model, request["TransformJobName"], failure):
        return "stopped"
    return outcome


def start_waiting_transforms(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    settings: jobs.JobSettings,
    *,
    stage: str,
    failure: str,
) -> list[str]:
    """Create the transforms that waited for the quota and have no job yet, the forecasting
    models' first; return the names created. Called on each of the run's transforms' end
    (the assemble step), and by the step whose transform was refused, once its
    `Transform Waiting` is recorded.

    A transform refused again waits on while another of the run's holds instances (its end
    calls this again); with none left, nothing would ever start it, so the run fails (a
    twin's: its backtest is lost), unless the run's last transform ended moments ago
    (`quota_wait.unless_released`). Each one that waited is announced once it exists
    (`Transform Started`, `waited`), also when a delivery that created it died before
    saying so.
    """
    run = manifest.run_id
    failed = publisher.settle(run, failure) != "absent"
    records = publisher.recorded(run, WAITING)
    if not records or (not failed and _forecast_ready(publisher, run)):
        # The common case, nothing waits; or the forecast is out, every transform ended.
        return []
    order = {model.name: index for index, model in enumerate(manifest.models)}
    waiting = sorted(
        (_waiter(manifest, record.get("detail") or {}) for record in records),
        key=lambda waiter: (order[waiter[0].name], waiter[1]),
    )
    names = [naming.transform_job_name(run, m.name, number) for m, number, _ in waiting]
    if failed:
        # A delivery that created one of them after the run's stops, and died before its
        # own check, left it running for nothing.
        stop_jobs(sagemaker, transform=names)
        return []
    lost = lost_backtest(publisher, run) is not None
    states = _states(sagemaker, manifest)
    created: list[str] = []
    for (model, number, artifact), job in zip(waiting, names, strict=True):
        if model.backtest and lost:
            if states[job].status in HOLDING:  # as above, for a twin's after the loss
                stop_jobs(sagemaker, transform=[job])
            continue
        if states[job].status is None:
            request = jobs.transform_request(manifest, model, settings, number)
            outcome = _create(sagemaker, manifest, model, settings, request)
            if isinstance(outcome, Refusal):
                if outcome.waits and not holding(states):
                    # Look again before giving up: a concurrent delivery may have started
                    # a transform of the run since (its end will call this again).
                    states = _states(sagemaker, manifest)
                if outcome.waits and holding(states):
                    logger.info("transform still waits for the quota", extra={"job": job})
                    continue
                if outcome.waits and not model.backtest:
                    unless_released(outcome, states)
                fail_model(storage, sagemaker, publisher, manifest, model.name, stage,
                           outcome.reason, failure)  # fmt: skip
                if model.backtest:
                    lost = True
                    continue
                return created
            if outcome == "created":
                created.append(job)
            states[job] = JobState("InProgress")  # by this call or a concurrent one: it holds
            if _stopped(sagemaker, publisher, manifest, model, job, failure):
                if publisher.settle(run, failure) != "absent":
                    return created
                lost = True  # a twin's, stopped: the backtest was lost meanwhile
                continue
        extra = {"model_artifact": artifact} if artifact else {}
        announce_transform(publisher, manifest, model, number, waited=True, **extra)
    return created


def announce_transform(
    publisher: EventPublisher,
    manifest: Manifest,
    model: ModelShards,
    number: int,
    **extra: Any,
) -> str:
    """Send `Transform Started` for the model's pass `number` once, whichever delivery
    created the job (`start_transform`); `extra`: more of the detail. Returns the job's name.
    """
    detail = _detail(manifest, model, number, **extra)
    publisher.publish(
        "Transform Started",
        detail,
        once=f"transform-started-{naming.pass_name(model.name, number)}",
    )
    return str(detail["transform_job"])


def fail_model(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    refused: str,
    stage: str,
    reason: str,
    failure: str,
) -> None:
    """SageMaker refused a job of model `refused` (its model or a transform): the forecast
    needs every model, so the run fails now with `reason`, and the other models' jobs are
    stopped (a transform still running, or a training job whose model would never be used).
    A backtest twin the forecast does not need: its refusal costs the backtest only.

    Before, Lambda retried twice and the failure queue announced the crash, while the
    siblings' transforms ran on to no end."""
    if manifest.model(refused).backtest:
        lose_backtest(storage, sagemaker, publisher, manifest, model=refused, stage=stage,
                      reason=reason, failure=failure)  # fmt: skip
        return
    training_jobs, transform_jobs = other_models_jobs(manifest, refused)
    detail = {"run_id": manifest.run_id, "dataset": manifest.dataset, "stage": stage,
              "reason": reason}  # fmt: skip
    fail_run(
        sagemaker, publisher, detail, stop_training=training_jobs, stop_transform=transform_jobs,
        once=failure,
    )  # fmt: skip


def _create(
    sagemaker: Any,
    manifest: Manifest,
    model: ModelShards,
    settings: jobs.JobSettings,
    request: dict[str, Any],
) -> Literal["created", "existed"] | Refusal:
    """Create the job of `request`: "created", "existed" (an earlier delivery created it),
    or why SageMaker refused it."""
    job = request["TransformJobName"]
    try:
        sagemaker.create_transform_job(**request)
    except sagemaker.exceptions.ResourceInUse:
        logger.info("transform job already exists", extra={"job": job})
        return "existed"
    except sagemaker.exceptions.ClientError as exc:
        message = exc.response["Error"]["Message"]
        if exc.response["Error"]["Code"] == "ResourceLimitExceeded":
            # What the run's transforms need at once, beside the quota SageMaker names
            requests = [
                request if m is model else jobs.transform_request(manifest, m, settings)
                for m in manifest.models
            ]
            reason = quota_reason("transform", requests, manifest.models.index(model), message)
            alone = int(request["TransformResources"]["InstanceCount"])
            return Refusal(reason, message, waits=holds_alone(message, alone))
        if is_refusal(exc):
            return Refusal(refusal_reason(f"transform job {job}", message))
        raise
    return "created"


def _stopped(
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    model: ModelShards,
    job: str,
    failure: str,
) -> bool:
    """Stop transform `job`, just created, if the run failed meanwhile (a sibling's stop
    came before it existed), or, for a twin's, if the backtest was lost meanwhile."""
    if not _run_over(publisher, manifest, model, failure):
        return False
    logger.warning("the run failed or its backtest was lost meanwhile; transform stopped",
                   extra={"job": job})  # fmt: skip
    stop_jobs(sagemaker, transform=[job])
    return True


def _run_over(
    publisher: EventPublisher, manifest: Manifest, model: ModelShards, failure: str
) -> bool:
    """Whether the run failed (`failure`: its `failure_name`), or, for a twin, whether its
    backtest was lost: no transform of the model is wanted any more."""
    if publisher.settle(manifest.run_id, failure) != "absent":
        return True
    return model.backtest and lost_backtest(publisher, manifest.run_id) is not None


def _forecast_ready(publisher: EventPublisher, run: str) -> bool:
    """Whether the run's forecast was announced: every transform it read has ended."""
    return publisher.record(run, FORECAST_READY) is not None


def _announce_waiting(
    publisher: EventPublisher,
    manifest: Manifest,
    model: ModelShards,
    number: int,
    refusal: Refusal,
    artifact: str | None,
) -> None:
    """Send `Transform Waiting` for the model's pass `number` once: its record is what
    `start_waiting_transforms` reads."""
    detail = _detail(manifest, model, number, **({"model_artifact": artifact} if artifact else {}))
    detail["reason"] = waiting_reason("transform", str(detail["transform_job"]), refusal.message)
    publisher.publish(
        "Transform Waiting", detail, once=WAITING + naming.pass_name(model.name, number)
    )


def _detail(manifest: Manifest, model: ModelShards, number: int, **extra: Any) -> dict[str, Any]:
    """What `Transform Started` and `Transform Waiting` say of the model's pass `number`."""
    return {
        "run_id": manifest.run_id,
        "dataset": manifest.dataset,
        "model": model.name,
        **extra,
        "transform_job": naming.transform_job_name(manifest.run_id, model.name, number),
        **({"pass": number + 1, "passes": model.passes} if model.passes else {}),
    }


def _waiter(manifest: Manifest, detail: dict[str, Any]) -> tuple[ModelShards, int, str | None]:
    """(model, pass number, model artifact) of a `Transform Waiting`'s detail."""
    number = int(detail.get("pass") or 1) - 1
    return manifest.model(str(detail["model"])), number, detail.get("model_artifact")


def _states(sagemaker: Any, manifest: Manifest) -> dict[str, JobState]:
    """Each of the run's transform jobs (every model's, every pass's), by name."""
    return job_states(sagemaker, "transform", transform_jobs(manifest, manifest.models))
