"""SageMaker's wire protocol (AWS JSON 1.1) in front of the backend.

Requests are ``POST /`` with ``X-Amz-Target: SageMaker.<Action>`` and a JSON
body; responses are JSON with timestamps as epoch seconds (floats), which is
what botocore's ``json`` protocol parser expects.  Errors are mapped here, in
one place and by type: ``{"__type": <code>, "message": ...}`` with HTTP 400, so
``ClientError.response["Error"]["Code"]`` is AWS's code.  An action this server
does not implement is answered with ``NotImplementedError`` naming it (HTTP 501,
which botocore does not retry).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from m5flow_local.sagemaker.exceptions import SageMakerError
from m5flow_local.sagemaker.models import SageMakerBackend

LOG = logging.getLogger(__name__)
TARGET_PREFIX = "SageMaker."
CONTENT_TYPE = "application/x-amz-json-1.1"


def _actions(backend: SageMakerBackend) -> dict[str, Callable[[dict[str, Any]], Any]]:
    b = backend
    return {
        "CreateTrainingJob": b.create_training_job,
        "DescribeTrainingJob": lambda p: b.describe_training_job(p.get("TrainingJobName")),
        "StopTrainingJob": lambda p: b.stop_training_job(p.get("TrainingJobName")),
        "ListTrainingJobs": b.list_training_jobs,
        "CreateModel": b.create_model,
        "DescribeModel": lambda p: b.describe_model(p.get("ModelName")),
        "DeleteModel": lambda p: b.delete_model(p.get("ModelName")),
        "ListModels": b.list_models,
        "CreateTransformJob": b.create_transform_job,
        "DescribeTransformJob": lambda p: b.describe_transform_job(p.get("TransformJobName")),
        "StopTransformJob": lambda p: b.stop_transform_job(p.get("TransformJobName")),
        "ListTransformJobs": b.list_transform_jobs,
    }


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body),
        status=status,
        content_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"__type": code, "message": message})


class SageMakerResponses:
    """The WSGI application: parse the call, run the action, shape the answer."""

    def __init__(self, backend: SageMakerBackend) -> None:
        self.actions = _actions(backend)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.dispatch(Request(environ))(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        target = request.headers.get("X-Amz-Target", "")
        if request.method != "POST" or not target.startswith(TARGET_PREFIX):
            return _error(
                404,
                "UnknownOperationException",
                "The local SageMaker serves POST / with X-Amz-Target: SageMaker.<Action>",
            )
        action = target[len(TARGET_PREFIX) :]
        try:
            params = json.loads(request.get_data() or b"{}")
            handler = self.actions.get(action)
            if handler is None:
                raise NotImplementedError(
                    f"The {action} action has not been implemented by the local SageMaker"
                )
            result = handler(params)
        except SageMakerError as exc:
            return _error(exc.status, exc.code, exc.message)
        except json.JSONDecodeError as exc:
            return _error(400, "SerializationException", str(exc))
        except NotImplementedError as exc:
            return _error(501, "NotImplementedError", str(exc))
        return _json(200, result or {})
