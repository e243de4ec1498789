"""Failure step: a pipeline function gave up on an event; announce which run and step failed.

Lambda retries a failed asynchronous invocation (`MaximumRetryAttempts` in template.yaml),
then sends an invocation record to the function's on-failure destination, the default event
bus, as `source: lambda`, `detail-type: Lambda Function Invocation Result - Failure`. The
stack's FailureRule keeps that record in the failure queue and hands it to this step, which
reads the run, the dataset and the step from the event that failed (the record's
`requestPayload`) and emits `Run Failed`.

A SageMaker job that ends Failed or Stopped is not a Lambda failure: the step that receives
its state change announces it with `announce_job_failure`, so that both kinds of `Run Failed`
are worded and logged here.

The ReportFailure function ships with the core layer only, so that it still reports when the
dataframe layer is what broke: nothing here imports pandas, pyarrow or numpy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger

from m5flow import naming
from m5flow.exceptions import QuotaNotReleasedError
from m5flow.hyperparameters import overrides_said
from m5flow.jobs import job_logs, one_line
from m5flow.manifest import Manifest, ModelShards
from m5flow.notifications import SOURCE, EventPublisher, Stage, ledger_key
from m5flow.storage import ObjectHead, ObjectMissingError, Storage
from m5flow.wording import cut

logger = Logger(child=True)
# A failure that leaves the run unable to finish (a model's job failed, a step refused) is
# announced once per run under this name; a later one (a sibling model's job) is logged only,
# and once it is recorded no transform starts. A Lambda that crashed is announced once per run
# and step instead, and stops nothing: another delivery of its event may still do the work.
RUN_FAILED = "run-failed"

# CloudFormation names a function `<stack>-<LogicalId>-<suffix>`: the step of a record that
# comes without its event (Lambda leaves out payloads too large for the destination) is read
# from there.
_STAGE_OF_FUNCTION = {
    "ShardFunction": Stage.SHARD,
    "StartTrainingFunction": Stage.START_TRAINING,
    "PublishModelFunction": Stage.PUBLISH_MODEL,
    "AssembleForecastFunction": Stage.ASSEMBLE_FORECAST,
}


@dataclass(frozen=True)
class InvocationFailure:
    """The parts of a Lambda on-failure invocation record this step uses."""

    function_arn: str
    request_id: str
    condition: str
    attempts: int
    payload: Mapping[str, Any] | None
    error_type: str | None
    error_message: str | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> InvocationFailure:
        """Read an invocation record (the `detail` of the EventBridge event)."""
        context = record["requestContext"]
        response = record.get("responsePayload")
        if not isinstance(response, Mapping):
            response = {}
        payload = record.get("requestPayload")
        return cls(
            function_arn=context["functionArn"],
            request_id=context["requestId"],
            condition=context["condition"],
            attempts=int(context.get("approximateInvokeCount") or 1),
            payload=payload if isinstance(payload, Mapping) else None,
            error_type=response.get("errorType"),
            error_message=response.get("errorMessage"),
        )

    @property
    def function_name(self) -> str:
        """`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]` -> `<name>`."""
        parts = self.function_arn.split(":")
        return parts[6] if len(parts) > 6 else self.function_arn

    @property
    def reason(self) -> str:
        """The error as the failed function raised it, e.g. `ClientError: An error ...`."""
        if self.error_type and self.error_message:
            return f"{self.error_type}: {self.error_message}"
        if self.error_type or self.error_message:
            return str(self.error_type or self.error_message)
        return f"Lambda gave up on the event ({self.condition}) without an error message"


@dataclass(frozen=True)
class FailedStep:
    """Which step failed on which run: what the failed event says, resolved against S3."""

    stage: str
    run_id: str | None
    dataset: str | None
    trigger: str | None  # the object or the SageMaker job the event was about


def _locate(payload: Mapping[str, Any] | None, function_name: str) -> FailedStep:
    """Stage, run and dataset as far as the failed event alone tells them.

    Read field by field rather than through Powertools' event classes, which raise on a
    missing field: the payload that failed may be any event, or malformed. The S3 key is
    URL-encoded, as the shard handler's `S3EventBridgeNotificationEvent` decodes it.
    """
    detail = (payload or {}).get("detail") or {}
    detail = detail if isinstance(detail, Mapping) else {}
    source = (payload or {}).get("source")
    if source == "aws.s3" and isinstance(detail.get("object"), Mapping):
        bucket = (detail.get("bucket") or {}).get("name", "")
        key = unquote_plus(str(detail["object"].get("key", "")))
        trigger = f"s3://{bucket}/{key}"
        run = naming.run_of(key)
        if run is not None:
            return FailedStep(Stage.START_TRAINING, run, None, trigger)
        # Only an input names its dataset's run; a stray CSV beside them is not that run's.
        dataset = naming.dataset_of(key) if naming.is_input(key) else None
        return FailedStep(Stage.SHARD, None, dataset, trigger)
    if source == "aws.sagemaker":
        for job, output, job_stage in (
            ("TrainingJobName", "OutputDataConfig", Stage.PUBLISH_MODEL),
            ("TransformJobName", "TransformOutput", Stage.ASSEMBLE_FORECAST),
        ):
            if job in detail:
                path = str((detail.get(output) or {}).get("S3OutputPath", ""))
                run = naming.run_of(naming.split_s3_uri(path)[1])
                return FailedStep(job_stage, run, None, str(detail[job]))
    run, dataset = detail.get("run_id"), detail.get("dataset")
    if source == SOURCE and isinstance(run, str) and run:  # m5flow's own (`Backtest Lost`)
        trigger = f"{(payload or {}).get('detail-type')} of run {run}"
        named = dataset if isinstance(dataset, str) and dataset else None  # else the manifest's
        return FailedStep(Stage.ASSEMBLE_FORECAST, run, named, trigger)
    stage = next(
        (s for fragment, s in _STAGE_OF_FUNCTION.items() if fragment in function_name),
        function_name,
    )
    return FailedStep(stage, None, None, None)


def _dataset_of_run(storage: Storage, run: str) -> str | None:
    """The run's dataset from its manifest; without a readable one (the step that failed
    may have failed on it), from the run id `<dataset>-<hex12>`."""
    try:
        return str(json.loads(storage.read(naming.manifest_key(run)))["dataset"])
    except (ObjectMissingError, ValueError, KeyError, TypeError):
        return naming.dataset_of_run_id(run)


def _run_of_dataset(storage: Storage, dataset: str) -> str | None:
    """The run the dataset's current inputs map to, or None while one is absent."""
    return naming.dataset_run(storage, naming.raw_prefix(dataset), dataset)[0]


def failed_step(storage: Storage, failure: InvocationFailure) -> FailedStep:
    """Work out the step, run and dataset of a failed invocation.

    The dataset of a run comes from its manifest (the run id alone holds a sanitised
    dataset name); the run of a failed shard step from the ETags of its three inputs, as
    the shard step itself derives it.

    Example
    -------
    >>> failed_step(storage, InvocationFailure.from_record(event["detail"])).stage.value
    'shard'
    """
    step = _locate(failure.payload, failure.function_name)
    if step.run_id is not None and step.dataset is None:
        return FailedStep(
            step.stage, step.run_id, _dataset_of_run(storage, step.run_id), step.trigger
        )
    if step.run_id is None and step.dataset is not None:
        return FailedStep(
            step.stage, _run_of_dataset(storage, step.dataset), step.dataset, step.trigger
        )
    return step


def failure_name(storage: Storage, run: str, manifest_head: ObjectHead | None = None) -> str:
    """The ledger name the run's final `Run Failed` goes under: RUN_FAILED, unless a record
    of that name is older than the run's manifest.

    Such a record belongs to an earlier run of the same inputs whose runs/ expired or was
    deleted while its ledger (events/) stayed, which lifecycle expiry, rounded to midnight,
    allows for a day: the run now under runs/ is a new one, whose steps must neither stop at
    the old failure nor be silenced by it, so it announces under
    `run-failed-<manifest ETag>`. Both times are S3's own (Last-Modified), one clock.
    `manifest_head`: the manifest's HEAD, when the caller has it already.
    """
    return this_runs_name(storage, run, RUN_FAILED, manifest_head)


def this_runs_name(
    storage: Storage, run: str, name: str, manifest_head: ObjectHead | None = None
) -> str:
    """The ledger name this run's announcement `name` goes under: `name`, unless a record
    of it is older than the run's manifest, an earlier run's of the same inputs (see
    `failure_name`); then `<name>-<manifest ETag>`."""
    manifest = manifest_head or storage.head(naming.manifest_key(run))
    record = storage.head(ledger_key(run, name))
    if manifest is None or record is None or record.modified >= manifest.modified:
        return name
    return f"{name}-{manifest.etag}"


def report_failure(
    storage: Storage, publisher: EventPublisher, record: Mapping[str, Any]
) -> dict[str, Any]:
    """Announce `Run Failed` for one on-failure invocation record; return the event's detail.

    Parameters
    ----------
    storage : Storage
        The stack's bucket, to read the run's manifest and the dataset's inputs.
    publisher : EventPublisher
        Where `Run Failed` goes.
    record : Mapping
        The `detail` of a `Lambda Function Invocation Result - Failure` event.

    Announced once per run and step: three deliveries of one upload that all crashed make
    one event. It does not fail the run for good (see RUN_FAILED), but for a job that waited
    for the quota and was refused on every try (QuotaNotReleasedError), which nothing is
    left to start. That stops no job (this step has no SageMaker permissions): none of the
    run's jobs of the refused one's kind was in progress, but one of the other kind (a
    training job still in progress when a transform was refused, or a transform started
    meanwhile) runs to its end, its output never used.

    Returns
    -------
    dict
        The detail published: `run_id` and `dataset` (None when the failed event does not
        identify them), `stage`, `reason` (error type and message), and `function`,
        `attempts`, `condition`, `request_id`, `trigger` to find the failure in the logs.

    Raises
    ------
    KeyError
        If `record` is not an invocation record (no `requestContext`).

    Example
    -------
    >>> report_failure(storage, publisher, event["detail"])["stage"]  # doctest: +SKIP
    'shard'
    """
    failure = InvocationFailure.from_record(record)
    step = failed_step(storage, failure)
    detail = {
        "run_id": step.run_id,
        "dataset": step.dataset,
        "stage": step.stage,
        "reason": failure.reason,
        "function": failure.function_name,
        "attempts": failure.attempts,
        "condition": failure.condition,
        "request_id": failure.request_id,
        "trigger": step.trigger,
    }
    logger.error("pipeline function failed", extra=detail)
    once = f"invocation-failed-{step.stage}"
    if failure.error_type == QuotaNotReleasedError.__name__ and step.run_id:
        # A job that waited for the quota was refused on every try, with none of the run's
        # jobs left to start it: the run cannot finish, so this failure is its last word.
        detail["reason"] = f"still refused after Lambda's retries: {failure.error_message}"
        once = failure_name(storage, step.run_id)
    # Without a run there is nowhere to record it: a re-delivered record may repeat it (with
    # the same request_id).
    announce_run_failure(publisher, detail, once=once)
    return detail


def announce_job_failure(
    publisher: EventPublisher,
    job: Mapping[str, Any],
    *,
    kind: str,
    run: str,
    dataset: str,
    once: str = RUN_FAILED,
    overrides: Mapping[str, str | None] | None = None,
) -> None:
    """Announce `Run Failed` for a SageMaker job that ended without completing.

    `job` is the state-change event's detail and `kind` is "training" or "transform": the
    detail's field prefix and the `stage` of the event. The event's `reason` is one line
    (`job_failure_reason`); SageMaker's whole `FailureReason` goes with it as
    `failure_reason`; `once` is the run's `failure_name`.
    """
    name = job[f"{kind.capitalize()}JobName"]
    status = job[f"{kind.capitalize()}JobStatus"]
    detail = {
        "run_id": run,
        "dataset": dataset,
        "stage": kind,
        "job": name,
        "status": status,
        "reason": job_failure_reason(job, kind, overrides),
        "failure_reason": _failure_reason(job, kind),
    }
    logger.error(f"{kind} did not complete", extra=detail)
    announce_run_failure(publisher, detail, once=once)


def job_failure_reason(
    job: Mapping[str, Any], kind: str, overrides: Mapping[str, str | None] | None = None
) -> str:
    """One line on why a SageMaker job ended without completing (`job`: its state change's
    detail), pointing to its logs when SageMaker cut the message off.

    A failed training job of a run whose `m5flow.json` set hyperparameters (`overrides`)
    names them: the container's reason ("Extraneous hyperparameter found: max_dept") does
    not say where the name came from, and the dataset's file is the likelier culprit.
    """
    name = job[f"{kind.capitalize()}JobName"]
    status = job[f"{kind.capitalize()}JobStatus"]
    said = one_line(_failure_reason(job, kind), job_logs(kind, name))
    reason = f"{kind} job {name} {status}: {said}"
    if overrides and kind == Stage.TRAINING and status == "Failed":
        settings = overrides_said(overrides)
        reason += f" (this dataset's {naming.OVERRIDES_FILE} set hyperparameters {settings})"
    return reason


def _failure_reason(job: Mapping[str, Any], kind: str) -> str:
    """SageMaker's whole FailureReason, or why a job it gave none for ended."""
    status = job[f"{kind.capitalize()}JobStatus"]
    return job.get("FailureReason") or _stop_reason(job, kind, status)


def _stop_reason(job: Mapping[str, Any], kind: str, status: str) -> str:
    """Why a job that SageMaker gave no FailureReason ended: a training job stopped at its
    time limit says so (SecondaryStatus MaxRuntimeExceeded), with the setting to change."""
    if job.get("SecondaryStatus") == "MaxRuntimeExceeded":
        limit = (job.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        seconds = f" ({limit} s)" if limit else ""
        return (
            f"the {kind} job reached MaxRuntimeInSeconds{seconds} and was stopped; raise the "
            "stack's MaxTrainingSeconds, or lower num_round"
        )
    return f"the {kind} job was {status.lower()}"


def announce_run_failure(
    publisher: EventPublisher, detail: Mapping[str, Any], once: str = RUN_FAILED
) -> bool:
    """Announce `Run Failed` unless an earlier failure of the run was announced under the
    same name `once`; True when this call sent it.

    A failure that belongs to no run (`run_id` None) is always sent (`EventPublisher`).
    """
    sent = publisher.publish("Run Failed", detail, once=once)
    if not sent:
        logger.warning("the run had failed before; this failure is logged only", extra=dict(detail))
    return sent


def fail_run(
    sagemaker: Any,
    publisher: EventPublisher,
    detail: Mapping[str, Any],
    *,
    stop_training: Sequence[str] = (),
    stop_transform: Sequence[str] = (),
    once: str = RUN_FAILED,
) -> None:
    """A step found the run cannot finish: announce `Run Failed` (`detail`: run_id, dataset,
    stage, reason) under `once`, the run's `failure_name`, then stop the run's jobs named,
    which would otherwise go on, billed, to no end.

    Announced first, so that a stopped job's own `Stopped` event, which the next step
    announces under the same name, cannot take the place of this reason. No stop may raise
    after it (a retry would find the run failed and stop nothing): a job that has ended is
    passed over, any other refusal logged as a warning: on AWS, a sibling's job that never
    started may be refused by IAM (the stop needs the stack's tag, template.yaml) rather than
    reported missing by SageMaker; either way nothing runs to stop. Not left to
    Lambda's retries: a quota below what the run needs, or a job name taken, refuses every
    retry too.
    """
    logger.error("the run cannot finish", extra=dict(detail))
    announce_run_failure(publisher, detail, once=once)
    stop_jobs(sagemaker, training=stop_training, transform=stop_transform)


def other_models_jobs(manifest: Manifest, model: str) -> tuple[list[str], list[str]]:
    """The training and transform jobs of the run's models other than `model`: each
    model's training job, model and transform job share its name (`naming.job_name`), and
    the recursive model has a transform job per pass besides (`naming.pass_name`)."""
    others = [m for m in manifest.models if m.name != model]
    training = [naming.job_name(manifest.run_id, m.name) for m in others]
    return training, transform_jobs(manifest, others)


def transform_jobs(manifest: Manifest, models: Sequence[ModelShards]) -> list[str]:
    """Every transform job of the `models` (of the run `manifest`): each pass's."""
    return [
        naming.transform_job_name(manifest.run_id, m.name, number)
        for m in models
        for number in range(m.last_pass + 1)
    ]


def stop_other_models(sagemaker: Any, manifest: Manifest, model: str) -> None:
    """A job of forecasting model `model` failed or stopped: the forecast needs every one
    (a backtest twin's costs the backtest only: `stages.backtest_loss`), so the other models'
    jobs, which would run on, billed, for a run that cannot finish, are stopped.
    On every delivery, not only the announcing one: a retry after a crash between the
    announcement and the stops must still stop them, and a job that has ended is passed
    over."""
    training_jobs, transform_jobs = other_models_jobs(manifest, model)
    stop_jobs(sagemaker, training=training_jobs, transform=transform_jobs)


def stop_jobs(
    sagemaker: Any, *, training: Sequence[str] = (), transform: Sequence[str] = ()
) -> None:
    """Stop the training and transform jobs named, of a run that has failed; never raises
    (see `fail_run`)."""
    stops = [(sagemaker.stop_training_job, "TrainingJobName", name) for name in training]
    stops += [(sagemaker.stop_transform_job, "TransformJobName", name) for name in transform]
    for stop, field, name in stops:
        try:
            stop(**{field: name})
        except sagemaker.exceptions.ClientError as exc:
            ended = exc.response.get("Error", {}).get("Code") == "ValidationException"
            (logger.info if ended else logger.warning)(
                "not stopped", extra={"job": name, "why": str(exc)}
            )
        except Exception as exc:  # botocore's connection and timeout errors
            logger.warning("not stopped", extra={"job": name, "why": repr(exc)})


_QUOTA_IN_MESSAGE = re.compile(r"is (\d+) Instances, with current utilization of (\d+)")


def quota_numbers(message: str) -> tuple[int, int] | None:
    """The quota and the instances in use that SageMaker's ResourceLimitExceeded message
    names ("... is 5 Instances, with current utilization of 5 Instances ..."), or None
    when it names neither: its wording is no contract, and without them nothing is
    assumed."""
    found = _QUOTA_IN_MESSAGE.search(message)
    return (int(found[1]), int(found[2])) if found else None


def quota_reason(
    kind: str, requests: Sequence[Mapping[str, Any]], refused: int, message: str
) -> str:
    """Why a service quota stops the run (`kind`: "training" or "transform"), and what the
    run's jobs of that kind need at once: SageMaker's message names the quota only.

    A job waits for the run's own jobs to end instead (`stages.quota_wait`), so it stops
    the run only when the quota cannot hold it alone, or when no job of the run is left to
    end.
    """
    field = "ResourceConfig" if kind == "training" else "TransformResources"
    resources = [request[field] for request in requests]
    needed = sum(int(r["InstanceCount"]) for r in resources)
    alone = int(resources[refused]["InstanceCount"])
    name = requests[refused][f"{kind.capitalize()}JobName"]
    reason = (
        f"SageMaker refused {kind} job {name} (ResourceLimitExceeded: {message}) The run's "
        f"{len(requests)} {kind} jobs need up to {needed} {resources[refused]['InstanceType']} "
        f"instances at once, this job {alone}"
    )
    quota = quota_numbers(message)
    if quota and quota[0] >= alone:
        return reason + (
            f": the quota holds this job, but other jobs held {quota[1]}, and none of this "
            f"run's is in progress, whose end would start it; to run these files again once "
            f"they end, upload them under a new {naming.RAW_PREFIX}<dataset>/ (SageMaker "
            "never frees a job name)"
        )
    memory = ", or one with more memory (fewer instances a job)" if alone > 1 else ""
    beyond = ", more than the quota holds" if quota else ""  # unknown without its numbers
    return (
        reason
        + beyond
        + (
            ": raise that quota in Service Quotas, or choose a "
            f"{kind.capitalize()}InstanceType whose quota holds it{memory}"
        )
    )


def waiting_reason(kind: str, name: str, message: str) -> str:
    """Why `kind` job `name` waits rather than fails: the quota would hold it alone, and
    the run's own jobs of its kind in progress hold the instances, so their ends start it.
    SageMaker's message is cut before its advice to ask for more, which a wait does not
    need."""
    said = message.split(" Please use AWS Service Quotas", 1)[0]
    return (
        f"{kind} job {name} waits for the quota (ResourceLimitExceeded: {said}) and starts "
        f"as this run's {kind} jobs in progress end"
    )


_REFUSAL_CHARS = 600  # of SageMaker's message: an enum violation lists 200-odd types


def is_refusal(exc: Exception) -> bool:
    """Whether SageMaker refused a request for breaking its API model's constraints ("1
    validation error detected: Value 'ml.x' at 'resourceConfig.instanceType' failed to
    satisfy constraint: ..."): sent again it is refused again, so the run fails with the
    reason at once. Other ValidationExceptions ("Could not assume role", "Could not find
    model data") may pass, and go on to Lambda's retries and the failure report."""
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    message = str(error.get("Message", ""))
    return error.get("Code") == "ValidationException" and bool(
        re.match(r"\d+ validation errors? detected: ", message)
    )


def refusal_reason(request: str, message: str) -> str:
    """Why SageMaker refused `request` (e.g. "training job m5flow-x-h7"), and what sets it.

    Example
    -------
    >>> refusal_reason("training job j", "Value 'ml.x' at 'resourceConfig.instanceType' ...")
    "SageMaker refused training job j (ValidationException: Value 'ml.x' at 'resourceConfig.instanceType' ...); the stack's parameters (TrainingImage, the instance types, Hyperparameters) or the dataset's m5flow.json set it"
    """  # noqa: E501
    return (
        f"SageMaker refused {request} (ValidationException: {cut(message, _REFUSAL_CHARS)}); "
        "the stack's parameters (TrainingImage, the instance types, Hyperparameters) or the "
        f"dataset's {naming.OVERRIDES_FILE} set it"
    )
