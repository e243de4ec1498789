"""Start-training step: a manifest was written; start one training job per model it lists.

A job that the account's quota would hold alone, refused because the run's own jobs hold
the instances, waits instead of failing the run: every training job of the run that ends
(its state change, at the publish step) starts the run's jobs that have none yet
(`start_waiting`), so a quota of one model's instances trains the run one model after
another, with nothing polling. The run fails only when the quota cannot hold the job at
all, or when none of the run's jobs is left in progress to end.
"""

from __future__ import annotations

from typing import Any, Literal

from aws_lambda_powertools import Logger

from m5flow import instances, jobs, naming
from m5flow.exceptions import RunFailedError
from m5flow.manifest import Manifest, ModelShards
from m5flow.notifications import EventPublisher, Stage
from m5flow.stages.backtest_loss import lose_backtest, lost_backtest
from m5flow.stages.failure import (
    fail_run,
    failure_name,
    is_refusal,
    other_models_jobs,
    quota_reason,
    refusal_reason,
    stop_jobs,
    this_runs_name,
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
from m5flow.storage import ObjectHead, Storage

logger = Logger(child=True)
# S3 and SageMaker clocks may differ by this much: a job of this run is never created
# earlier than its manifest was written, less this.
CLOCK_SKEW_SECONDS = 2.0
# The run's first `Training Started`, by its name in the ledger: sent once the start-training
# step has tried every model's job, so the jobs that wait are known.
TRAINING_STARTED = "training-started"


Created = Literal["created", "existed"]


def start_training(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest_key: str,
    settings: jobs.JobSettings,
) -> list[str]:
    """Create the run's training jobs; return the names of the jobs this call created.

    A job that already exists was started by an earlier delivery of the same event: it is
    counted as done, and `Training Started` is announced once per run, naming the jobs that
    wait for the quota. A delivery after that announcement only starts the jobs that waited
    (`start_waiting`), as a job's end does. A backtest twin that SageMaker refuses (a
    malformed request, say) costs the run its backtest, not its forecast
    (`stages.backtest_loss`): no twin trains then.
    """
    manifest = Manifest.from_json(storage.read(manifest_key))
    run = manifest.run_id
    head = storage.head(manifest_key)
    written = head.modified if head else None
    failure = failure_name(storage, run, head)
    if publisher.settle(run, failure) != "absent":
        # A late delivery after this run failed (a quota refused it): start nothing more.
        logger.warning("the run has failed; no training", extra={"run_id": run})
        return []
    try:
        requests = [jobs.training_request(manifest, model, settings) for model in manifest.models]
    except RunFailedError as exc:  # settings the run's data cannot train with
        _fail_run(sagemaker, publisher, manifest, exc.reason, stop=[], once=failure)
        return []
    twin_jobs = [r["TrainingJobName"] for m, r in zip(manifest.models, requests, strict=True)
                 if m.backtest]  # fmt: skip
    lost = lost_backtest(publisher, run) is not None
    if lost:  # a delivery that lost it may have died before stopping the twins it created
        stop_jobs(sagemaker, training=twin_jobs)
    started_name = training_started_name(storage, run, head)
    if publisher.settle(run, started_name) != "absent":  # (sent, if its sender died)
        # Every job was tried before; its jobs that waited are start_waiting's, which
        # announces each it starts (here, a job would start unannounced).
        return start_waiting(storage, sagemaker, publisher, manifest, settings,
                             stage=Stage.START_TRAINING, failure=failure,
                             manifest_head=head)  # fmt: skip
    created: list[str] = []
    existed = False
    waiting: dict[str, Refusal] = {}
    for index, (model, request) in enumerate(zip(manifest.models, requests, strict=True)):
        if model.backtest and lost:  # a twin was refused before: no twin trains
            continue
        _log_host_memory(run, model, request["ResourceConfig"])
        name = request["TrainingJobName"]
        outcome = _create(sagemaker, requests, index, written)
        if outcome == "created":
            created.append(name)
        existed = existed or outcome == "existed"
        if not isinstance(outcome, Refusal):
            continue
        if outcome.waits:  # the end of a job created before it starts it (start_waiting)
            waiting[name] = outcome
            logger.info("training job waits for the quota", extra={"job": name,
                        "reason": waiting_reason("training", name, outcome.message)})  # fmt: skip
            continue
        if model.backtest:  # the twins come last: every forecasting model's job is created
            lose_backtest(storage, sagemaker, publisher, manifest, model=model.name,
                          stage=Stage.START_TRAINING, reason=outcome.reason, failure=failure,
                          transforms=False)  # fmt: skip
            lost = True
            continue
        started = [r["TrainingJobName"] for r in requests[:index]]
        _fail_run(sagemaker, publisher, manifest, outcome.reason,
                  stop=[n for n in started if n not in waiting], once=failure)  # fmt: skip
        return created
    if waiting and not created and not existed:
        # No job of the run exists, so none will end to start these: other jobs of the
        # account hold the instances. Failed now, without a start that starts nothing.
        _fail_run(sagemaker, publisher, manifest, next(iter(waiting.values())).reason, stop=[],
                  once=failure)  # fmt: skip
        return created
    created_twins = [name for name in twin_jobs if name in created]
    if created_twins and not lost and lost_backtest(publisher, run):
        # A concurrent delivery lost the backtest after this one created twins: its stops
        # may have come before they existed.
        stop_jobs(sagemaker, training=created_twins)
        lost = True
    training = [r for m, r in zip(manifest.models, requests, strict=True)
                if not (m.backtest and lost) and r["TrainingJobName"] not in waiting]  # fmt: skip
    reasons = {
        name: waiting_reason("training", name, refusal.message) for name, refusal in waiting.items()
    }
    _announce(publisher, manifest, storage.uri(manifest_key), settings, training,
              waiting=reasons, once=started_name)  # fmt: skip
    if waiting:
        # The jobs that held the quota may all have ended between the refusals and now,
        # their state changes finding nothing to start: look once more, after them.
        created += start_waiting(storage, sagemaker, publisher, manifest, settings,
                                 stage=Stage.START_TRAINING, failure=failure,
                                 manifest_head=head)  # fmt: skip
    return created


def start_waiting(
    storage: Storage,
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    settings: jobs.JobSettings,
    *,
    stage: Stage,
    failure: str,
    manifest_head: ObjectHead | None = None,
) -> list[str]:
    """Create the training jobs that waited for the quota and have none yet; return the
    names created. Called after each of the run's training jobs ends, and by the
    start-training step once its own refusals are in (or on a later delivery).
    `manifest_head`: the manifest's HEAD, when the caller has it already.

    A job refused again waits on while another job of the run holds instances (its end
    calls this again); with none left, nothing would ever start it, so the run fails (a
    twin's: its backtest is lost). Each job that waited is announced once it exists
    (`Training Started`), also when a delivery that created it died before saying so.
    """
    run = manifest.run_id
    if publisher.settle(run, failure) != "absent":
        return []
    started = publisher.record(run, training_started_name(storage, run, manifest_head))
    if started is None:
        # The start-training step has not tried every job yet (a job that ends fast, in
        # local mode): what has none is not waiting but still to come, and that step looks
        # again itself once it has tried them all.
        return []
    waiting = set((started.get("detail") or {}).get("waiting") or [])
    if not waiting:  # the common case: every job started at once, and nothing to look up
        return []
    lost = lost_backtest(publisher, run) is not None
    try:
        requests = [jobs.training_request(manifest, model, settings) for model in manifest.models]
    except RunFailedError as exc:  # the stack's settings changed since the run started
        _fail_run(sagemaker, publisher, manifest, exc.reason, stop=[], once=failure, stage=stage)
        return []
    names = [r["TrainingJobName"] for r in requests]
    states = job_states(sagemaker, "training", names)
    uri = storage.uri(naming.manifest_key(run))
    created: list[str] = []
    for index, (model, name) in enumerate(zip(manifest.models, names, strict=True)):
        if name not in waiting or (model.backtest and lost):
            continue
        if states[name].status is None:
            outcome = _create(sagemaker, requests, index, None)
            if isinstance(outcome, Refusal):
                if outcome.waits and not holding(states):
                    # Look again before giving up: a concurrent delivery may have started
                    # a job of the run since (its end will call this again).
                    states = job_states(sagemaker, "training", names)
                if outcome.waits and holding(states):
                    reason = waiting_reason("training", name, outcome.message)
                    logger.info("training job still waits for the quota",
                                extra={"job": name, "reason": reason})  # fmt: skip
                    continue
                if outcome.waits and not model.backtest:
                    # A twin is not worth the run: refused on every try, its error would
                    # fail the run for good (report_failure), so it costs the backtest now.
                    unless_released(outcome, states)
                if model.backtest:
                    lose_backtest(storage, sagemaker, publisher, manifest, model=model.name,
                                  stage=stage, reason=outcome.reason, failure=failure,
                                  transforms=stage != Stage.START_TRAINING)  # fmt: skip
                    lost = True
                    continue
                _fail_waiting(sagemaker, publisher, manifest, model, outcome.reason, stage=stage,
                              failure=failure, names=names)  # fmt: skip
                return created
            if outcome == "created":
                created.append(name)
            states[name] = JobState("InProgress")  # by this call or a concurrent one: it holds
        if publisher.settle(run, failure) != "absent":
            # A sibling failed the run while these were created (its stops came first), and
            # nothing is announced after its Run Failed.
            stop_jobs(sagemaker, training=created)
            return created
        _announce(publisher, manifest, uri, settings, [requests[index]], waited=True,
                  once=f"training-started-{model.name}")  # fmt: skip
    twins = [n for m, n in zip(manifest.models, names, strict=True) if m.backtest and n in created]
    if twins and lost_backtest(publisher, run):  # a twin was lost meanwhile: its stops came first
        stop_jobs(sagemaker, training=twins)
    return created


def training_started_name(storage: Storage, run: str, manifest: ObjectHead | None = None) -> str:
    """The ledger name of the run's first `Training Started`, recorded once the start-training
    step has tried every job: TRAINING_STARTED, or, when an earlier run of the same inputs
    left a record of that name, `training-started-<manifest ETag>` (`this_runs_name`)."""
    return this_runs_name(storage, run, TRAINING_STARTED, manifest)


def _fail_waiting(
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    model: ModelShards,
    reason: str,
    *,
    stage: Stage,
    failure: str,
    names: list[str],
) -> None:
    """A forecasting model's job that waited can never start (`reason`): fail the run, then
    stop its training jobs (`names`) that hold instances and, where the step may, its
    transforms. The start-training step may not: a transform its publish step started
    meanwhile (a job that ended during that step's seconds) runs to its end, unread.

    The jobs to stop are looked at after `Run Failed` is recorded: a concurrent
    `start_waiting` checks the run after each job it creates, so such a job is either seen
    here (SageMaker's Describe showing a job once its Create has returned) or stopped by
    that delivery itself."""
    transforms = other_models_jobs(manifest, model.name)[1] if stage != Stage.START_TRAINING else []
    _fail_run(sagemaker, publisher, manifest, reason, stop=[], once=failure, stage=stage,
              stop_transform=transforms)  # fmt: skip
    try:
        states = job_states(sagemaker, "training", names)
        in_progress = [name for name, state in states.items() if state.status in HOLDING]
    except Exception as exc:  # nothing may raise after the announcement (fail_run)
        logger.warning("could not look at the run's jobs; stopping each", extra={"why": repr(exc)})
        in_progress = names
    stop_jobs(sagemaker, training=in_progress)


def _create(
    sagemaker: Any, requests: list[dict[str, Any]], index: int, manifest_written: float | None
) -> Created | Refusal:
    """Create the job of `requests[index]`: "created", "existed" (an earlier delivery, or
    another step, created it for this run), or why SageMaker refused it."""
    request = requests[index]
    name = request["TrainingJobName"]
    try:
        sagemaker.create_training_job(**request)
    except sagemaker.exceptions.ResourceInUse:
        reason = _taken_before(sagemaker, name, manifest_written)
        if reason is None:
            logger.info("training job already exists", extra={"job": name})
            return "existed"
        return Refusal(reason)
    except sagemaker.exceptions.ResourceLimitExceeded as exc:
        message = exc.response["Error"]["Message"]
        alone = int(request["ResourceConfig"]["InstanceCount"])
        return Refusal(quota_reason("training", requests, index, message), message,
                       waits=holds_alone(message, alone))  # fmt: skip
    except sagemaker.exceptions.ClientError as exc:
        if not is_refusal(exc):
            raise
        return Refusal(refusal_reason(f"training job {name}", exc.response["Error"]["Message"]))
    return "created"


def _announce(
    publisher: EventPublisher,
    manifest: Manifest,
    manifest_uri: str,
    settings: jobs.JobSettings,
    training: list[dict[str, Any]],
    *,
    once: str,
    waiting: dict[str, str] | None = None,
    waited: bool = False,
) -> None:
    """Send `Training Started` for the jobs of `training` once (`once`: the run's first
    announcement, or a job's own that `waited` for the quota), naming the jobs that wait
    (`waiting`: each with why) and the first one's reason."""
    publisher.publish(
        "Training Started",
        {
            "run_id": manifest.run_id,
            "dataset": manifest.dataset,
            "training_jobs": [request["TrainingJobName"] for request in training],
            "instance_type": settings.training_instance_type,
            "instances": {
                r["TrainingJobName"]: r["ResourceConfig"]["InstanceCount"] for r in training
            },
            "manifest": manifest_uri,  # an s3:// URI, as in Run Started
            **(
                {"waiting": list(waiting), "waiting_reason": next(iter(waiting.values()))}
                if waiting
                else {}
            ),
            **({"waited": True} if waited else {}),
        },
        once=once,
    )


def _log_host_memory(run: str, model: ModelShards, resources: dict[str, Any]) -> None:
    """Log what each host of a model's job is estimated to need, and warn when a stack's
    fixed TrainingInstanceCount leaves that above the instance's memory (the job would
    most likely end in an out-of-memory exit)."""
    count, instance_type = resources["InstanceCount"], resources["InstanceType"]
    need, memory = instances.host_memory(model, count), instances.instance_memory(instance_type)
    extra = {"run_id": run, "model": model.name, "instance_type": instance_type,
             "instance_count": count, "host_gib": round(need / instances.GIB, 2)}  # fmt: skip
    if memory is not None and need > memory * instances.USABLE_FRACTION:
        logger.warning(
            f"each host may need more memory than {instance_type} has: consider "
            f"TrainingInstanceCount={instances.AUTO} or a larger TrainingInstanceType",
            extra=extra | {"instance_gib": memory / instances.GIB},
        )
    else:
        logger.info("training hosts", extra=extra)


def _taken_before(sagemaker: Any, name: str, manifest_written: float | None) -> str | None:
    """Why job `name` cannot be this run's, if an earlier run of the same inputs created it
    (its `runs/<run>/` since expired, or deleted): SageMaker never frees a job name, so
    this run would wait forever for jobs that ended long ago. None for a job of this run,
    created after its manifest by an earlier delivery of the same event."""
    created = sagemaker.describe_training_job(TrainingJobName=name)["CreationTime"]
    if manifest_written is None or created.timestamp() >= manifest_written - CLOCK_SKEW_SECONDS:
        return None
    return (
        f"training job {name} already exists, created {created:%Y-%m-%d %H:%M} UTC by an "
        "earlier run of these same inputs whose files under runs/ have since gone; SageMaker "
        f"never frees a job name, so upload them under a new {naming.RAW_PREFIX}<dataset>/ "
        "to run them again"
    )


def _fail_run(
    sagemaker: Any,
    publisher: EventPublisher,
    manifest: Manifest,
    reason: str,
    *,
    stop: list[str],
    once: str,
    stage: Stage = Stage.START_TRAINING,
    stop_transform: list[str] | None = None,
) -> None:
    """Announce that the run cannot train (at `stage`), then stop the training jobs it had
    started, and the transforms named."""
    detail = {"run_id": manifest.run_id, "dataset": manifest.dataset, "stage": stage,
              "reason": reason}  # fmt: skip
    fail_run(sagemaker, publisher, detail, stop_training=stop,
             stop_transform=stop_transform or [], once=once)  # fmt: skip
