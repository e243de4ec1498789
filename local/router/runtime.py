"""An in-process Lambda runtime: load a function's unmodified app.py and invoke its handler.

Each function is imported once, with its own environment from the template applied, as a
Lambda execution environment would do on a cold start. Invocations are serialised, since the
environment is process-wide.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from m5flow_local.router.template import FunctionSpec, function_arn

_env_lock = threading.RLock()


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    with _env_lock:
        saved = {key: os.environ.get(key) for key in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools and handlers read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    invoked_function_arn: str = ""
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        elapsed = time.monotonic() - self._started
        return max(0, int((self.timeout_seconds - elapsed) * 1000))


class LambdaTimeoutError(Exception):
    """The handler ran longer than its function's Timeout: on AWS it would have been killed."""


class LocalFunction:
    """One deployed function: its spec, its module (loaded on first use) and its handler."""

    def __init__(self, spec: FunctionSpec, region: str, account: str) -> None:
        self.spec = spec
        self.environment = {
            **spec.environment,
            "AWS_REGION": region,
            "AWS_LAMBDA_FUNCTION_NAME": spec.logical_id,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        }
        self.arn = function_arn(region, account, spec.logical_id)
        self._handler: Callable[[dict[str, Any], Any], Any] | None = None

    def _load(self) -> Callable[[dict[str, Any], Any], Any]:
        module_name, _, attribute = self.spec.handler.rpartition(".")
        path = self.spec.code_dir / f"{module_name.replace('.', '/')}.py"
        spec = importlib.util.spec_from_file_location(
            f"m5flow_function_{self.spec.logical_id}", path
        )
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"{self.spec.logical_id}: no handler module at {path}")
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, attribute)

    def invoke(self, event: dict[str, Any]) -> Any:
        with _environment(self.environment):
            if self._handler is None:
                self._handler = self._load()
            context = LambdaContext(
                function_name=self.spec.logical_id,
                memory_limit_in_mb=self.spec.memory_mb,
                timeout_seconds=self.spec.timeout,
                invoked_function_arn=self.arn,
            )
            result = self._handler(event, context)
        # A thread cannot be killed mid-handler; the result is refused afterwards instead, so
        # the invocation fails here as it would on AWS (the router sends it to the failure
        # destination), and nobody ships a handler that only finishes in time on a laptop.
        if context.get_remaining_time_in_millis() == 0:
            raise LambdaTimeoutError(f"Task timed out after {self.spec.timeout:.2f} seconds")
        return result
