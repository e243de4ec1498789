"""The local cloud: moto's server, the local SageMaker, the stack's resources and the router.

`LocalCloud` brings up on 127.0.0.1 everything the deployed stack has on AWS, reached by
unmodified boto3 clients through `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SAGEMAKER`, and
runs the real handlers in-process when the template's rules say so.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from m5flow import naming
from m5flow.notifications import SOURCE, TERMINAL
from m5flow_local.console import describe, print_line, said
from m5flow_local.router.bus import EventRouter, Invocation
from m5flow_local.router.runtime import LocalFunction
from m5flow_local.router.template import load_stack
from m5flow_local.sagemaker.server import LocalSageMaker
from m5flow_local.stopping import stop_signals_held

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
BUCKET = "m5flow-local-data"
_BUS_QUEUE = "m5flow-local-bus"
_FAILURE_QUEUE = "m5flow-local-failures"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class LocalRunFailedError(Exception):
    """Raised when a local run ends without a forecast (rejected input, failed job, crash)."""


@dataclass
class _Outcomes:
    """Terminal m5flow events and failed invocations, for callers waiting on a run."""

    condition: threading.Condition = field(default_factory=threading.Condition)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        with self.condition:
            self.events.append(event)
            self.condition.notify_all()


class LocalCloud:
    """Start with `with LocalCloud(workdir) as cloud:`; everything stops on exit."""

    def __init__(
        self,
        workdir: Path,
        *,
        parameters: dict[str, str] | None = None,
        echo: Callable[[str], None] | None = print_line,
        quotas: dict[str, int] | None = None,
    ) -> None:
        """`quotas`: SageMaker's service quotas to hold the jobs to (`LocalSageMaker`),
        to rehearse a run that meets one; none by default."""
        self.workdir = Path(workdir).resolve()  # the training hosts run in their own folders
        self.parameters = parameters or {}
        self.quotas = quotas
        self.echo = echo or (lambda _line: None)
        self.bucket = BUCKET
        self.outcomes = _Outcomes()
        self.routed: list[tuple[dict[str, Any], list[str]]] = []  # every event and its targets
        self._saved_env: dict[str, str | None] = {}
        self._moto: ThreadedMotoServer | None = None
        self._sagemaker: LocalSageMaker | None = None
        self.router: EventRouter | None = None
        self.environment: dict[str, str] = {}

    def __enter__(self) -> LocalCloud:
        try:
            self.start()
        except BaseException:  # a Ctrl-C while the servers start: stop the ones that did
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _set_environment(self, variables: dict[str, str]) -> None:
        for key, value in variables.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        self.environment.update(variables)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Both endpoints are werkzeug servers that log every request; the events are the story.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self._set_environment({**_CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"})
        events = boto3.client("events")
        self._sagemaker = LocalSageMaker(
            lambda event: self._put_aws_event(events, event),
            self.workdir / "sagemaker",
            region=REGION,
            account_id=ACCOUNT,
            progress=lambda line: self._say("job", line),
            quotas=self.quotas,
        )
        self._set_environment({"AWS_ENDPOINT_URL_SAGEMAKER": self._sagemaker.start()})
        queue_url, failure_queue_url = self._provision(events)
        role_arn = f"arn:aws:iam::{ACCOUNT}:role/m5flow-local-sagemaker"
        stack = load_stack(
            {
                "DataBucket": self.bucket,
                "DataBucket.Arn": f"arn:aws:s3:::{self.bucket}",
                "SageMakerExecutionRole": "m5flow-local-sagemaker",
                "SageMakerExecutionRole.Arn": role_arn,
                "FailureQueue": failure_queue_url,
                "FailureQueue.Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{_FAILURE_QUEUE}",
            },
            parameters=self.parameters,
            region=REGION,
            account=ACCOUNT,
        )
        functions = {
            name: LocalFunction(spec, REGION, ACCOUNT) for name, spec in stack.functions.items()
        }
        self.router = EventRouter(
            boto3.client("sqs"),
            events,
            queue_url,
            stack,
            functions,
            ACCOUNT,
            queues={"FailureQueue": failure_queue_url},
            on_event=self._on_event,
            on_invocation=self._on_invocation,
        )
        self.router.start()
        self.echo(
            f"local cloud up: S3/EventBridge/SQS/CloudWatch Logs {os.environ['AWS_ENDPOINT_URL']}, "
            f"SageMaker {os.environ['AWS_ENDPOINT_URL_SAGEMAKER']}, bucket {self.bucket}"
        )

    def _provision(self, events: Any) -> tuple[str, str]:
        """Create what the stack's template creates on AWS; return the bus and failure queues."""
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=self.bucket)
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(
            Bucket=self.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(
            QueueName=_BUS_QUEUE, Attributes={"VisibilityTimeout": "3600"}
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events.put_rule(
            Name="m5flow-local-everything", EventPattern=json.dumps({"account": [ACCOUNT]})
        )
        events.put_targets(
            Rule="m5flow-local-everything", Targets=[{"Id": "bus", "Arn": queue_arn}]
        )
        failure_queue_url = sqs.create_queue(QueueName=_FAILURE_QUEUE)["QueueUrl"]
        return queue_url, failure_queue_url

    @staticmethod
    def _put_aws_event(events: Any, event: dict[str, Any]) -> None:
        """Put a service event (the local SageMaker's state changes) on the default bus."""
        entry = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event["detail"]),
            "Resources": event.get("resources", []),
        }
        if event.get("time"):
            entry["Time"] = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC
            )
        events.put_events(Entries=[entry])

    def _say(self, kind: str, text: str) -> None:
        """One console line: the time, what happened (event, lambda, job, upload), details."""
        self.echo(f"{datetime.now(UTC):%H:%M:%S} {kind:<6} {text}")

    def _on_event(self, event: dict[str, Any], targets: list[str]) -> None:
        self.routed.append((event, targets))
        # Every shard written is an S3 event too; only the ones that start something are news.
        if event.get("source") != "aws.s3" or targets:
            self._say("event", describe(event))
        if event.get("source") == SOURCE and event.get("detail-type") in TERMINAL:
            self.outcomes.add(event)

    def _on_invocation(self, invocation: Invocation) -> None:
        if invocation.error is None:
            self._say(
                "lambda", f"{invocation.function}: {said(invocation.function, invocation.result)}"
            )
            return
        self._say(
            "lambda",
            f"{invocation.function} FAILED after {invocation.attempts} attempts:\n"
            f"{invocation.error}",
        )
        self.outcomes.add(
            {
                "source": "lambda",
                "detail-type": "Lambda Function Invocation Result - Failure",
                "detail": {
                    "function": invocation.function,
                    "reason": invocation.error.strip().splitlines()[-1],
                },
            }
        )

    def upload_dataset(self, data_dir: Path, dataset: str, files: tuple[str, ...]) -> None:
        """Upload the given files of `data_dir` to raw/<dataset>/, as a user would."""
        s3 = boto3.client("s3")
        for name in files:
            key = naming.raw_prefix(dataset) + name
            self._say("upload", f"s3://{self.bucket}/{key}")  # before its own event's line
            s3.upload_file(str(Path(data_dir) / name), self.bucket, key)

    def wait_for_outcome(self, dataset: str, timeout: float) -> dict[str, Any]:
        """Block until the dataset's run ends (a terminal m5flow event or a crashed handler)."""

        def found() -> dict[str, Any] | None:
            for event in self.outcomes.events:
                detail = event.get("detail", {})
                if event.get("source") == "lambda" or detail.get("dataset") == dataset:
                    return event
            return None

        with self.outcomes.condition:
            self.outcomes.condition.wait_for(lambda: found() is not None, timeout=timeout)
            event = found()
        if event is None:
            raise LocalRunFailedError(
                f"no forecast for {dataset} within {timeout:g} s (--timeout waits longer); "
                + self._jobs_in_progress()
                + (f"; {busy} was at work" if (busy := self.router and self.router.busy) else "")
            )
        return event

    def _jobs_in_progress(self) -> str:
        """Which SageMaker jobs had not ended, asked as a user would."""
        sagemaker = boto3.client("sagemaker")
        running = []
        try:
            for kind in ("Training", "Transform"):
                pages = sagemaker.get_paginator(f"list_{kind.lower()}_jobs")
                for page in pages.paginate(StatusEquals="InProgress"):
                    running += [f"{kind.lower()} job {job[f'{kind}JobName']}"
                                for job in page[f"{kind}JobSummaries"]]  # fmt: skip
        except Exception as exc:  # the timeout is the news; the jobs only add to it
            return f"its jobs could not be listed ({exc})"
        return f"still running: {', '.join(running)}" if running else "no job was running"

    def download(self, key: str, path: Path) -> None:
        boto3.client("s3").download_file(self.bucket, key, str(path))

    def stop(self) -> None:
        with stop_signals_held():  # a second Ctrl-C must not leave training hosts running
            try:
                if self.router is not None:
                    self.router.stop()
                if self._sagemaker is not None:
                    self._sagemaker.stop()
                if self._moto is not None:
                    self._moto.stop()
            finally:
                for key, value in self._saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
                self._saved_env.clear()
