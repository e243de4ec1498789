"""The constraints of SageMaker's API model that its front end enforces and botocore does not.

botocore checks a request's types, required members and lower bounds before sending it;
SageMaker itself refuses the rest: a value outside an enum (an instance type that does
not exist), a string, list or map longer than its maximum (a hyperparameter value over
2,500 characters), a number above its maximum. The limits are read from the service model
botocore ships, the one the client was built from, so they cannot drift from AWS's.
Names and tags have checks of their own (`resources.check_name_and_tags`) and are skipped.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape

_CHECKED_ELSEWHERE = frozenset({"TrainingJobName", "ModelName", "TransformJobName", "Tags"})
_SHOWN = 100  # characters of a value quoted in a violation


@cache
def _operation(name: str) -> OperationModel:
    return botocore.session.get_session().get_service_model("sagemaker").operation_model(name)


def shape_violations(operation: str, params: dict[str, Any]) -> list[str]:
    """What `params` breaks of `operation`'s input shape, in AWS's words (see
    `resources.check_request`): "Value 'ml.x' at 'resourceConfig.instanceType' failed to
    satisfy constraint: Member must satisfy enum value set: [ml.m4.xlarge, ...]".
    """
    shape = _operation(operation).input_shape
    found: list[str] = []
    for name, value in params.items():
        if name in shape.members and name not in _CHECKED_ELSEWHERE:
            _walk(shape.members[name], value, _camel(name), found)
    return found


def _walk(shape: Shape, value: Any, where: str, found: list[str]) -> None:
    limits = shape.metadata
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in value.items():
            if name in shape.members:
                _walk(shape.members[name], member, f"{where}.{_camel(name)}", found)
    elif shape.type_name == "list" and isinstance(value, list):
        _size(value, where, limits, found)
        for number, item in enumerate(value, start=1):
            _walk(shape.member, item, f"{where}.{number}.member", found)
    elif shape.type_name == "map" and isinstance(value, dict):
        _size(value, where, limits, found)
        for key, item in value.items():
            _walk(shape.key, key, f"{where}.key", found)
            _walk(shape.value, item, f"{where}.{key}", found)
    elif shape.type_name == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            allowed = ", ".join(shape.enum)
            found.append(_violation(value, where, f"satisfy enum value set: [{allowed}]"))
        _size(value, where, limits, found)
    elif (
        shape.type_name in ("integer", "long")
        and isinstance(value, int)
        and value > limits.get("max", value)
    ):
        found.append(_violation(value, where, f"have value less than or equal to {limits['max']}"))


def _size(value: str | list[Any] | dict[str, Any], where: str, limits: dict, found: list) -> None:
    if "max" in limits and len(value) > limits["max"]:
        found.append(_violation(value, where, f"have length less than or equal to {limits['max']}"))


def _violation(value: Any, where: str, constraint: str) -> str:
    shown = str(value)
    shown = shown if len(shown) <= _SHOWN else f"{shown[:_SHOWN]}..."
    return f"Value '{shown}' at '{where}' failed to satisfy constraint: Member must {constraint}"


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]
