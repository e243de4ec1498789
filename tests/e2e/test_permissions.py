"""Every AWS call a function makes in the local flow is one its role in template.yaml allows.

moto allows every call, so without this a missing permission would first show as an
AccessDenied on a real deploy, in the middle of a user's run. Here the local flow runs
in-process with every boto3 call recorded as the handlers make it (through the same,
unmodified clients), each call is turned into the IAM requests AWS authorizes for it
(`_requests`: actions, resource ARNs, condition keys), and each request is evaluated against
the statements of the calling function's role, as the SAM translator expands the template
(`_allows`). The roles hold no Deny, so an Allow whose action, resource and conditions all
match is the whole evaluation. The bucket policy (TLS only) and the KMS key are
test_security's: the local endpoint has neither.

A call this file cannot map fails the test by name, so a new call cannot slip past it.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from botocore.exceptions import ClientError

from m5flow.naming import OVERRIDES_FILE, pass_of
from m5flow.schema import INPUT_FILES, SALES_FILE
from m5flow_local.cloud import ACCOUNT, BUCKET, REGION, LocalCloud
from m5flow_local.router import runtime
from m5flow_local.router.template import StackSpec
from m5flow_local.sagemaker import s3io, transform
from tests.conftest import sample_event
from tests.template.test_security import _branch, _listed, _role_of, _statements

JOB_ROLE = "SageMakerExecutionRole"  # the caller of the jobs' own S3 reads and writes


@dataclass(frozen=True)
class Call:
    function: str
    service: str
    operation: str
    params: dict[str, Any]
    error: str | None = None  # the error code AWS answered, e.g. "404" for an absent object


@dataclass(frozen=True)
class Request:
    """One authorization AWS makes for a call: an action on a resource, in a context."""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)
    creates: bool = False  # the call makes the resource: it has no tags of its own yet


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Recording:
    calls: list[Call]
    stack: StackSpec  # the one the local cloud routed by: its names resolve the policies


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, small_m5: Path) -> Recording:
    """The calls of a run that ends in a forecast scored on an uploaded truth, an upload
    refused, a stand-in for an input, a training job's failure, a crashed step reported by
    the failure rule, a run that meets a training quota too small for one job, one whose
    jobs wait for the quota, and one that meets a transform quota and stops its other
    jobs."""
    calls: list[Call] = []
    caller = threading.local()
    make_api_call = botocore.client.BaseClient._make_api_call
    invoke = runtime.LocalFunction.invoke

    def recording_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        function = getattr(client, "_m5flow_role", None) or getattr(caller, "function", None)
        if function is None:
            return make_api_call(client, operation, params)
        service = client.meta.service_model.service_name
        try:
            result = make_api_call(client, operation, params)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            calls.append(Call(function, service, operation, dict(params), code))
            raise
        calls.append(Call(function, service, operation, dict(params)))
        return result

    def submit_as_caller(pool: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any,
                         **kwargs: Any) -> Any:  # fmt: skip
        """A handler's worker threads (the shard step writes its shards from a pool) call
        with the handler's role."""
        function = getattr(caller, "function", None)

        def as_caller(*a: Any, **k: Any) -> Any:
            caller.function = function
            try:
                return fn(*a, **k)
            finally:
                caller.function = None

        return submit(pool, as_caller, *args, **kwargs)

    def named_invoke(function: runtime.LocalFunction, event: dict[str, Any]) -> Any:
        caller.function = function.spec.logical_id
        try:
            return invoke(function, event)
        finally:
            caller.function = None

    def job_client(region: str) -> Any:
        """The jobs' S3 client: SageMaker reads and writes with the job's execution role."""
        client = job_s3_client(region)
        client._m5flow_role = JOB_ROLE
        return client

    job_s3_client, submit = s3io.client, ThreadPoolExecutor.submit
    work = tmp_path_factory.mktemp("permissions")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(botocore.client.BaseClient, "_make_api_call", recording_call)
        patch.setattr(runtime.LocalFunction, "invoke", named_invoke)
        patch.setattr(s3io, "client", job_client)
        patch.setattr(ThreadPoolExecutor, "submit", submit_as_caller)
        with LocalCloud(work / "cloud", echo=None) as cloud:
            assert cloud.router is not None
            stack = cloud.router.stack
            _scenarios(cloud, small_m5, work)
        # No training instance: the run fails at once.
        quota = {"ml.m5.xlarge for training job usage": 0}
        with LocalCloud(work / "quota", echo=None, quotas=quota) as cloud:
            cloud.upload_dataset(small_m5, "quota", INPUT_FILES)
            outcome = cloud.wait_for_outcome("quota", timeout=300)
            assert "service limit" in outcome["detail"].get("reason", ""), outcome
        # Room for three of the run's nine training jobs and one transform: the others
        # wait, and the publish step starts the training jobs as the run's end, the
        # assemble step the transforms; the run ends with its backtest.
        quota = {
            "ml.m5.xlarge for training job usage": 3,
            "ml.m5.xlarge for transform job usage": 1,
        }
        with LocalCloud(work / "waits", echo=None, quotas=quota) as cloud:
            patch.setattr(transform, "run_transform_job",
                          _held_until_one_waits(cloud, transform.run_transform_job))  # fmt: skip
            cloud.upload_dataset(small_m5, "waits", INPUT_FILES)
            outcome = cloud.wait_for_outcome("waits", timeout=600)
            assert outcome["detail-type"] == "Forecast Ready", outcome
            assert "backtest_wrmsse" in outcome["detail"]["headline"], outcome
        # No transform instance at all: the first model's transform is refused, and the run
        # stops the other models' jobs (training, and transforms never created).
        quota = {"ml.m5.xlarge for transform job usage": 0}
        with LocalCloud(work / "transform-quota", echo=None, quotas=quota) as cloud:
            cloud.upload_dataset(small_m5, "transform-quota", INPUT_FILES)
            outcome = cloud.wait_for_outcome("transform-quota", timeout=300)
            assert "service limit" in outcome["detail"].get("reason", ""), outcome
    return Recording(calls, stack)


def _held_until_one_waits(cloud: LocalCloud, run_transform: Callable[..., None]) -> Callable:
    """The local SageMaker's transform runner, holding the first transform in progress until
    another of its run waits for the quota: on small data they end too fast to overlap."""
    first = threading.Lock()

    def held(backend: Any, job: Any, model: Any) -> None:
        if first.acquire(blocking=False):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(
                event.get("detail-type") == "Transform Waiting" for event, _ in cloud.routed
            ):
                time.sleep(0.1)
        run_transform(backend, job, model)

    return held


@pytest.fixture(scope="module")
def recorded(recording: Recording) -> list[Call]:
    return recording.calls


@pytest.fixture(scope="module")
def policies(recording: Recording) -> dict[str, list[dict[str, Any]]]:
    """Each caller's role statements (the functions', and the jobs' role), resolved against
    the local cloud's names."""
    stack = recording.stack
    resources = _branch(stack.resources)  # the default parameters' branch of each Fn::If
    roles = {function: _role_of(resources, function) for function in stack.functions}
    roles[JOB_ROLE] = resources[JOB_ROLE]
    return {caller: [stack.resolve(s) for s in _statements(role)] for caller, role in roles.items()}


def _scenarios(cloud: LocalCloud, small_m5: Path, work: Path) -> None:
    s3 = boto3.client("s3")
    ids = [line.split(",", 1)[0] for line in (small_m5 / SALES_FILE).read_text().splitlines()]
    truth = "\n".join(["id," + ",".join(f"d_{1941 + h}" for h in range(1, 29))] +
                      [f"{i}," + ",".join("1" * 28) for i in ids[1:]])  # fmt: skip
    s3.put_object(Bucket=cloud.bucket, Key="raw/scored/sales_test_evaluation.csv",
                  Body=truth.encode())  # fmt: skip
    cloud.upload_dataset(small_m5, "scored", INPUT_FILES)
    outcome = cloud.wait_for_outcome("scored", timeout=600)
    assert outcome["detail-type"] == "Forecast Ready", outcome
    assert outcome["detail"]["headline"]["scored_on"] == "truth", outcome
    run = outcome["detail"]["run_id"]

    # Early-stopped direct models (no backtest twins): the validation channel's writes and
    # reads, which the default no longer makes.
    early = work / "early"
    early.mkdir()
    for name in INPUT_FILES:
        (early / name).write_bytes((small_m5 / name).read_bytes())
    (early / OVERRIDES_FILE).write_text('{"direct_trees": 0, "recursive_passes": 0}')
    cloud.upload_dataset(early, "early", (OVERRIDES_FILE, *INPUT_FILES))
    assert cloud.wait_for_outcome("early", timeout=600)["detail-type"] == "Forecast Ready"

    refused = work / "refused"
    refused.mkdir()
    for name in INPUT_FILES:
        (refused / name).write_bytes((small_m5 / name).read_bytes())
    (refused / SALES_FILE).write_text("id,d_1\nnot,a,sales,file\n")
    cloud.upload_dataset(refused, "refused", INPUT_FILES)
    assert cloud.wait_for_outcome("refused", timeout=120)["detail-type"] == "Input Rejected"

    # Kaggle's first-stage sales file where the input belongs: the step looks for the
    # input (absent: a 404) and for an upload of it still in parts before refusing it.
    stand_in = work / "stand-in"
    stand_in.mkdir()
    (stand_in / "sales_train_validation.csv").write_bytes((small_m5 / SALES_FILE).read_bytes())
    cloud.upload_dataset(stand_in, "stand-in", ("sales_train_validation.csv",))
    assert cloud.wait_for_outcome("stand-in", timeout=120)["detail-type"] == "Input Rejected"

    # A training job's failure, as SageMaker would announce it (delivered after the
    # forecast: the run is over, so the announcement is the only thing left to do).
    failed = sample_event("sagemaker_training_failed")
    job = f"m5flow-{run}-h7"
    failed["detail"] |= {
        "TrainingJobName": job,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{job}",
        "OutputDataConfig": {"S3OutputPath": f"s3://{cloud.bucket}/runs/{run}/model/h7"},
    }
    assert cloud.router is not None
    results = cloud.router.deliver(failed)
    assert all(r.error is None for r in results), [r.error for r in results]

    # A crashed step, which the failure rule takes to ReportFailureFunction. moto's state
    # outlives a local cloud within one process: a run id of its own, announced only here.
    crashed = f"crashed-{secrets.token_hex(6)}"
    s3.put_object(Bucket=cloud.bucket, Key=f"runs/{crashed}/manifest.json", Body=b"{not json")
    with cloud.outcomes.condition:
        assert cloud.outcomes.condition.wait_for(
            lambda: any(e["detail"].get("run_id") == crashed for e in cloud.outcomes.events),
            timeout=120,
        )


# --------------------------------------------------------------------------- IAM requests


def _s3_object(params: dict[str, Any]) -> str:
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def _versioned(action: str, params: dict[str, Any]) -> str:
    """Reading or deleting a given version is a *Version action of its own."""
    return action + "Version" if params.get("VersionId") else action


def _listing(action: str) -> Callable[[dict[str, Any]], list[Request]]:
    def requests(params: dict[str, Any]) -> list[Request]:
        prefix = {"s3:prefix": params.get("Prefix", "")}
        return [Request(action, f"arn:aws:s3:::{params['Bucket']}", prefix)]

    return requests


def _sagemaker_arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name.lower()}"


def _creating(kind: str, name_key: str, role_key: str | None) -> Callable[..., list[Request]]:
    """Create* with tags needs AddTags on the new resource too; a role passed, PassRole."""

    def requests(params: dict[str, Any]) -> list[Request]:
        tags = {f"aws:RequestTag/{t['Key']}": t["Value"] for t in params.get("Tags", [])}
        arn = _sagemaker_arn(kind, params[name_key])
        action = "sagemaker:Create" + "".join(p.title() for p in kind.split("-"))
        found = [Request(action, arn, tags, creates=True)]
        if tags:
            found.append(Request("sagemaker:AddTags", arn, tags, creates=True))
        if role_key:
            passed = {"iam:PassedToService": "sagemaker.amazonaws.com"}
            found.append(Request("iam:PassRole", params[role_key], passed))
        return found

    return requests


def _on_job(action: str, kind: str, name_key: str) -> Callable[..., list[Request]]:
    def requests(params: dict[str, Any]) -> list[Request]:
        return [Request(action, _sagemaker_arn(kind, params[name_key]))]

    return requests


# The calls the functions and the jobs can make (storage.py, stages/, local/sagemaker/s3io.py).
REQUESTS: dict[tuple[str, str], Callable[[dict[str, Any]], list[Request]]] = {
    ("s3", "GetObject"): lambda p: [Request(_versioned("s3:GetObject", p), _s3_object(p))],
    ("s3", "HeadObject"): lambda p: [Request(_versioned("s3:GetObject", p), _s3_object(p))],
    ("s3", "PutObject"): lambda p: [Request("s3:PutObject", _s3_object(p))],
    ("s3", "DeleteObject"): lambda p: [Request(_versioned("s3:DeleteObject", p), _s3_object(p))],
    ("s3", "ListObjectsV2"): _listing("s3:ListBucket"),
    ("s3", "ListMultipartUploads"): _listing("s3:ListBucketMultipartUploads"),
    ("events", "PutEvents"): lambda p: [
        Request(
            "events:PutEvents",
            f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{e.get('EventBusName', 'default')}",
        )
        for e in p["Entries"]
    ],
    ("sagemaker", "CreateTrainingJob"): _creating("training-job", "TrainingJobName", "RoleArn"),
    ("sagemaker", "CreateModel"): _creating("model", "ModelName", "ExecutionRoleArn"),
    ("sagemaker", "CreateTransformJob"): _creating("transform-job", "TransformJobName", None),
    ("sagemaker", "DescribeTrainingJob"): _on_job(
        "sagemaker:DescribeTrainingJob", "training-job", "TrainingJobName"
    ),
    ("sagemaker", "DescribeTransformJob"): _on_job(
        "sagemaker:DescribeTransformJob", "transform-job", "TransformJobName"
    ),
    ("sagemaker", "StopTrainingJob"): _on_job(
        "sagemaker:StopTrainingJob", "training-job", "TrainingJobName"
    ),
    ("sagemaker", "StopTransformJob"): _on_job(
        "sagemaker:StopTransformJob", "transform-job", "TransformJobName"
    ),
}


def _requests(call: Call, resource_tags: dict[str, dict[str, str]]) -> list[Request]:
    """The IAM requests of one call, with the resource's tags where AWS would read them."""
    mapped = REQUESTS.get((call.service, call.operation))
    assert mapped, f"{call.function} calls {call.service}:{call.operation}: map it in REQUESTS"
    absent = []
    if call.service == "s3" and call.error in ("404", "NoSuchKey", "NotFound"):
        # S3 answers 404 for an absent object only to a caller who may list the bucket, and
        # 403 to any other, which the code would take for a crash. No prefix: conservative.
        absent = [Request("s3:ListBucket", f"arn:aws:s3:::{call.params['Bucket']}")]
    return absent + [
        r if r.creates else Request(r.action, r.resource, {**_tags_of(r.resource, resource_tags),
                                                           **r.context})
        for r in mapped(call.params)
    ]  # fmt: skip


def _tags_of(arn: str, resource_tags: dict[str, dict[str, str]]) -> dict[str, str]:
    return {f"aws:ResourceTag/{k}": v for k, v in resource_tags.get(arn, {}).items()}


# --------------------------------------------------------------------------- evaluation


def _condition_holds(operator: str, key: str, wanted: Any, context: dict[str, str]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if key not in context:
        return if_exists
    value = context[key]
    patterns = [str(w) for w in _listed(wanted)]
    if base == "StringEquals":
        return value in patterns
    if base in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)
    raise AssertionError(f"condition operator {operator} is not evaluated here: add it")


def _allows(statement: dict[str, Any], request: Request) -> bool:
    assert statement["Effect"] == "Allow", statement  # a Deny would need evaluating first
    actions = _listed(statement["Action"])
    if not any(fnmatch.fnmatch(request.action.lower(), a.lower()) for a in actions):
        return False
    if not any(fnmatch.fnmatchcase(request.resource, r) for r in _listed(statement["Resource"])):
        return False
    return all(
        _condition_holds(operator, key, wanted, request.context)
        for operator, block in statement.get("Condition", {}).items()
        for key, wanted in block.items()
    )


def _stops_what_never_started(call: Call, resource_tags: dict[str, dict[str, str]]) -> bool:
    """A failing run stops its sibling models' jobs by name, also those it never created.
    With no tag to match, IAM refuses such a stop on AWS (403 where SageMaker would say
    not found); `failure.fail_run` logs either refusal and goes on, so it is no error."""
    if call.service != "sagemaker" or not call.operation.startswith("Stop") or not call.error:
        return False
    return all(r.resource not in resource_tags for r in REQUESTS[("sagemaker", call.operation)](
        call.params))  # fmt: skip


def _made_resources(calls: list[Call]) -> Iterator[tuple[str, dict[str, str]]]:
    """The tags each SageMaker resource was created with: what aws:ResourceTag reads."""
    for call in calls:
        if call.service == "sagemaker" and call.operation.startswith("Create"):
            for request in REQUESTS[(call.service, call.operation)](call.params):
                if request.action.startswith("sagemaker:Create"):
                    yield request.resource, {t["Key"]: t["Value"] for t in call.params["Tags"]}


# --------------------------------------------------------------------------- the tests


def test_the_scenarios_reach_every_function_and_kind_of_call(recorded: list[Call]) -> None:
    """What the permission test below covers; it would prove little on fewer calls."""
    made = {(c.function, c.service, c.operation) for c in recorded}
    assert {function for function, _, _ in made} == {
        "ShardFunction", "StartTrainingFunction", "PublishModelFunction",
        "AssembleForecastFunction", "ReportFailureFunction", JOB_ROLE,
    }  # fmt: skip
    # The jobs read their channels and the model, and write the model and the predictions.
    job_writes = {c.params["Key"].split("/")[2] for c in recorded
                  if c.function == JOB_ROLE and c.operation == "PutObject"}  # fmt: skip
    assert job_writes == {"model", "predictions"}
    # The shard step writes its shards from worker threads: they count as its calls.
    shard_writes = {c.params["Key"].split("/")[2] for c in recorded
                    if c.function == "ShardFunction" and c.operation == "PutObject"
                    and c.params["Key"].startswith("runs/")}  # fmt: skip
    assert shard_writes == {"train", "validation", "inference", "manifest.json"}
    assert ("PublishModelFunction", "sagemaker", "StopTrainingJob") in made
    assert ("PublishModelFunction", "sagemaker", "StopTransformJob") in made
    # The jobs that waited for the quota, started as the run's jobs ended.
    assert ("PublishModelFunction", "sagemaker", "CreateTrainingJob") in made
    # The transforms that waited for the quota, started as the run's transforms ended.
    waited = [c.params["TransformJobName"] for c in recorded
              if (c.function, c.operation) == ("AssembleForecastFunction", "CreateTransformJob")
              and not c.error and pass_of(c.params["TransformJobName"])[1] == 0]  # fmt: skip
    assert waited, "no transform that waited was started"
    assert ("PublishModelFunction", "sagemaker", "DescribeTransformJob") in made
    assert ("AssembleForecastFunction", "sagemaker", "DescribeTransformJob") in made
    assert any(c.error == "404" and c.operation == "HeadObject" for c in recorded)
    truth_read = [c for c in recorded if c.params.get("Key", "").endswith("test_evaluation.csv")]
    assert {c.function for c in truth_read} == {"AssembleForecastFunction"}
    # What no scenario here makes, so no role statement behind it is checked by this file.
    unexercised = set(REQUESTS) - {(c.service, c.operation) for c in recorded}
    assert unexercised == {
        ("s3", "DeleteObject"),  # a record withdrawn when PutEvents refuses its event
    }


def test_the_start_training_step_may_stop_its_own_stack_s_jobs_only(
    recorded: list[Call], policies: dict[str, list[dict[str, Any]]]
) -> None:
    """No scenario makes the start-training step stop a job: a job beyond the quota waits,
    and the run a quota stops at once has started none. Its statement is checked on the
    request such a stop makes (a run refused after it started some: a taken name, a
    malformed request), with the stack's tag as its own jobs carry it."""
    tags = next(c.params["Tags"] for c in recorded if c.operation == "CreateTrainingJob")
    (stack,) = [t["Value"] for t in tags if t["Key"] == "m5flow:stack"]
    job = _sagemaker_arn("training-job", "m5flow-x-h14")
    for owner, allowed in ((stack, True), ("another-stack", False)):
        request = Request("sagemaker:StopTrainingJob", job, {"aws:ResourceTag/m5flow:stack": owner})
        assert any(_allows(s, request) for s in policies["StartTrainingFunction"]) is allowed


def test_every_call_a_function_makes_is_allowed_by_its_role(
    recorded: list[Call], policies: dict[str, list[dict[str, Any]]]
) -> None:
    resource_tags = dict(_made_resources(recorded))
    denied = {}
    for call in recorded:
        if _stops_what_never_started(call, resource_tags):
            continue
        for request in _requests(call, resource_tags):
            if not any(_allows(s, request) for s in policies[call.function]):
                shown = json.dumps(request.context) if request.context else ""
                denied.setdefault((call.function, request.action, request.resource), shown)
    assert not denied, "\n".join(
        f"{function} needs {action} on {resource} {context}"
        for (function, action, resource), context in sorted(denied.items())
    )


def test_a_call_outside_the_role_is_denied(policies: dict[str, list[dict[str, Any]]]) -> None:
    """The evaluation can fail: calls like the recorded ones, aimed at another bucket,
    another stack's jobs, a role other than the SageMaker one or the raw uploads, are each
    refused."""
    for function, request in [
        ("AssembleForecastFunction",
         Request("s3:GetObject", "arn:aws:s3:::someone-else/raw/x/sales_test_evaluation.csv")),
        ("AssembleForecastFunction", Request("s3:PutObject", f"arn:aws:s3:::{BUCKET}/raw/x/y")),
        ("PublishModelFunction",
         Request("sagemaker:StopTrainingJob", _sagemaker_arn("training-job", "m5flow-x-h7"),
                 {"aws:ResourceTag/m5flow:stack": "another-stack"})),
        ("StartTrainingFunction",
         Request("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin",
                 {"iam:PassedToService": "sagemaker.amazonaws.com"})),
        # The raw uploads stay as they were: the step that reads them cannot change them.
        ("ShardFunction", Request("s3:PutObject", f"arn:aws:s3:::{BUCKET}/raw/x/calendar.csv")),
        ("ShardFunction", Request("s3:DeleteObject", f"arn:aws:s3:::{BUCKET}/raw/x/calendar.csv")),
    ]:  # fmt: skip
        assert not any(_allows(s, request) for s in policies[function]), (function, request)
