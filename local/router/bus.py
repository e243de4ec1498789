"""The local event bus: deliver every event on moto's EventBridge to the template's targets.

moto's EventBridge has one catch-all rule whose target is an SQS queue; this router is that
queue's consumer, as Lambda's own pollers are for an SQS event source. Each event is
normalised to AWS's shape, shown, matched against the rules of template.yaml and handed to
the in-process functions, with Lambda's asynchronous retry policy (two retries).
"""

from __future__ import annotations

import json
import queue
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from m5flow_local.router.normalize import MultipartCompletions, normalize
from m5flow_local.router.patterns import matches
from m5flow_local.router.runtime import LambdaTimeoutError, LocalFunction
from m5flow_local.router.template import StackSpec

_LONG_POLL_SECONDS = 1  # bounds how long stop() waits; messages arrive as soon as sent
_ROUTER = "event router"  # the "function" of a failure of the router itself
_RECEIVE_ATTEMPTS = 5  # reads of the bus in a row that fail before the router says so


@dataclass(frozen=True)
class Invocation:
    """The outcome of delivering one event to one function."""

    function: str
    event: dict[str, Any]
    result: Any = None
    error: str | None = None  # the last traceback when every attempt failed
    attempts: int = 1


class EventRouter:
    """Consumes the bus queue on a daemon thread until `stop()`."""

    def __init__(
        self,
        sqs: Any,
        events: Any,
        queue_url: str,
        stack: StackSpec,
        functions: dict[str, LocalFunction],
        account: str,
        *,
        queues: dict[str, str] | None = None,
        on_event: Callable[[dict[str, Any], list[str]], None],
        on_invocation: Callable[[Invocation], None],
    ) -> None:
        self.sqs = sqs
        self.events = events
        self.queue_url = queue_url
        self.stack = stack
        self.functions = functions
        self.account = account
        self.queues = queues or {}  # logical id of an SQS rule target -> its queue URL
        self.on_event = on_event
        self.on_invocation = on_invocation
        self._stopped = threading.Event()
        self.busy: str | None = None  # the function being invoked now, for a timeout to name
        # Receiving and invoking run on separate threads: a long handler (the shard step
        # writes hundreds of objects, each an event) must not leave the events piling up in
        # moto's queue, whose sends slow down as it grows.
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._multipart = MultipartCompletions()
        self._receiver = threading.Thread(
            target=self._receive, name="m5flow-bus-receiver", daemon=True
        )
        self._worker = threading.Thread(target=self._work, name="m5flow-bus-worker", daemon=True)

    def start(self) -> None:
        self._receiver.start()
        self._worker.start()

    def stop(self) -> None:
        self._stopped.set()
        self._receiver.join(timeout=30)
        self._inbox.put(None)
        self._worker.join(timeout=30)

    def targets_of(self, event: dict[str, Any]) -> list[str]:
        """The functions the template's rules route `event` to."""
        return [
            target
            for rule in self.stack.rules
            if matches(rule.pattern, event)
            for target in rule.targets
        ]

    def deliver(self, event: dict[str, Any]) -> list[Invocation]:
        """Route one (already normalised) event and invoke its targets."""
        targets = self.targets_of(event)
        self.on_event(event, targets)
        for name in targets:
            if name in self.queues:  # e.g. the dead-letter store of failed invocations
                self.sqs.send_message(QueueUrl=self.queues[name], MessageBody=json.dumps(event))
        invocations = [self._invoke(name, event) for name in targets if name in self.functions]
        for invocation in invocations:
            self.on_invocation(invocation)
        return invocations

    def _invoke(self, name: str, event: dict[str, Any]) -> Invocation:
        self.busy = name
        try:
            return self._invoke_with_retries(name, event)
        finally:
            self.busy = None

    def _invoke_with_retries(self, name: str, event: dict[str, Any]) -> Invocation:
        function = self.functions[name]
        attempts = 1 + function.spec.max_retry_attempts
        failure: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                return Invocation(name, event, function.invoke(event), attempts=attempt)
            except LambdaTimeoutError as exc:
                # The handler ran to its end before its result was refused: a retry would find
                # its own work done and pass, hiding a handler that is too slow for AWS.
                failure, attempts = exc, attempt
                break
            except Exception as exc:  # a Lambda invocation error: retried, then reported
                failure = exc
        assert failure is not None
        destination = function.spec.on_failure_destination
        if destination and ":event-bus/" in destination:
            self._send_failure(function, event, failure, attempts, destination)
        error = "".join(traceback.format_exception(failure))
        return Invocation(name, event, error=error, attempts=attempts)

    def _send_failure(
        self,
        function: LocalFunction,
        event: dict[str, Any],
        failure: BaseException,
        attempts: int,
        destination: str,
    ) -> None:
        """Do what Lambda does with an OnFailure destination of type EventBridge."""
        detail = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"{function.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {
                "errorMessage": str(failure),
                "errorType": type(failure).__name__,
                "requestId": "",
                "stackTrace": traceback.format_tb(failure.__traceback__),
            },
        }
        self.events.put_events(
            Entries=[
                {
                    "Source": "lambda",
                    "DetailType": "Lambda Function Invocation Result - Failure",
                    "Detail": json.dumps(detail, default=str),
                    "Resources": [function.arn],
                    "EventBusName": destination,
                }
            ]
        )

    def _receive(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                self._receive_once()
                failures = 0
            except Exception:
                # A receiver that died would leave the run waiting in silence for events
                # never read: a passing error is tried again, a lasting one reported.
                failures += 1
                if failures == _RECEIVE_ATTEMPTS:
                    self.on_invocation(Invocation(_ROUTER, {}, error=traceback.format_exc()))
                self._stopped.wait(_LONG_POLL_SECONDS)

    def _receive_once(self) -> None:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=_LONG_POLL_SECONDS,
        )
        for message in response.get("Messages", []):
            try:
                event = normalize(json.loads(message["Body"]), self.account)
                if event is not None and not self._multipart.repeated(event):
                    self._inbox.put(event)
            except Exception:  # this message only: the rest of the batch goes on
                self.on_invocation(
                    Invocation(_ROUTER, {"Body": message.get("Body")}, error=traceback.format_exc())
                )
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _work(self) -> None:
        while (event := self._inbox.get()) is not None:
            try:
                self.deliver(event)
            except Exception:  # reported as a failed delivery; the next event goes on
                self.on_invocation(Invocation(_ROUTER, event, error=traceback.format_exc()))
