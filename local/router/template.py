"""The stack as the local cloud sees it: functions and event rules read from template.yaml.

The template is transformed by the SAM translator exactly as `sam deploy` would, so the
EventBridge rules the local router applies are the ones CloudFormation would create, not a
second copy of them kept by hand.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml
from samtranslator.translator.transform import transform

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"
_LOCAL_CODE_BUCKET = "m5flow-local-code"


class TemplateError(Exception):
    """Raised when template.yaml uses something the local cloud cannot resolve."""


@dataclass(frozen=True)
class FunctionSpec:
    """One Lambda function: where its code is and what environment it gets."""

    logical_id: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    timeout: int
    memory_mb: int
    # Lambda's asynchronous invocation settings (AWS::Lambda::EventInvokeConfig).
    max_retry_attempts: int = 2
    on_failure_destination: str | None = None


@dataclass(frozen=True)
class RuleSpec:
    """One EventBridge rule on the default bus and the functions it invokes."""

    logical_id: str
    pattern: dict[str, Any]
    targets: tuple[str, ...]


@dataclass(frozen=True)
class StackSpec:
    functions: dict[str, FunctionSpec]
    rules: list[RuleSpec]
    resources: dict[str, dict[str, Any]] = field(repr=False)  # as translated, unresolved
    resolve: Callable[[Any], Any] = field(repr=False)  # an intrinsic, with the local names


class _NoManagedPolicies:
    """The translator only needs AWS managed policy ARNs for `Policies: [Name]` entries."""

    def load(self) -> dict[str, str]:
        return {}


@dataclass
class _Resolver:
    """Evaluates the intrinsic functions the template uses, against local physical names."""

    parameters: Mapping[str, str]
    physical: Mapping[str, str]  # logical id -> name; "<id>.<Attr>" -> attribute value
    region: str
    account: str

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "m5flow-local",
        }
        for table in (pseudo, self.parameters, self.physical):
            if name in table:
                return str(table[name])
        raise TemplateError(f"local cloud cannot resolve Ref {name}")

    def __call__(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                target = ".".join(arg) if isinstance(arg, list) else arg
                if target not in self.physical:
                    raise TemplateError(f"local cloud cannot resolve Fn::GetAtt {target}")
                return self.physical[target]
            if fn == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self(arg[1]))
                return self._sub(text, extra)
            if fn == "Fn::Join":
                return str(arg[0]).join(str(x) for x in self(arg[1]))
        return {key: self(value) for key, value in node.items()}

    def _sub(self, text: str, extra: Mapping[str, Any]) -> str:
        out, rest = [], text
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            out.append(before)
            if name in extra:
                out.append(str(extra[name]))
            elif "." in name:
                out.append(self({"Fn::GetAtt": name.split(".", 1)}))
            else:
                out.append(self.ref(name))
        return "".join(out) + rest


def function_arn(region: str, account: str, logical_id: str) -> str:
    """A local function's ARN: its logical id is its name."""
    return f"arn:aws:lambda:{region}:{account}:function:{logical_id}"


def parameter_problems(specs: Mapping[str, Any], overrides: Mapping[str, str]) -> list[str]:
    """What CloudFormation would refuse in `overrides`, one line per problem: an unknown
    name, or a value outside the parameter's Type, AllowedValues, AllowedPattern or bounds."""
    problems = []
    for name, value in overrides.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(f"{name}: not a parameter of template.yaml ({', '.join(specs)})")
            continue
        why = spec.get("ConstraintDescription")
        if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
            allowed = ", ".join(str(v) for v in spec["AllowedValues"])
            problems.append(f"{name}={value}: must be one of {allowed}")
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
            problems.append(f"{name}={value}: must be {why or 'like ' + spec['AllowedPattern']}")
        if spec.get("Type") == "Number":
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):  # "nan" and "inf" parse, but are no number to it
                problems.append(f"{name}={value}: must be a number")
                continue
            low, high = spec.get("MinValue"), spec.get("MaxValue")
            if (low is not None and number < float(low)) or (
                high is not None and number > float(high)
            ):
                bounds = [f"at least {low}"] if low is not None else []
                bounds += [f"at most {high}"] if high is not None else []
                problems.append(f"{name}={value}: must be {' and '.join(bounds)}")
    return problems


def _load_template(template_path: Path) -> dict[str, Any]:
    """template.yaml as plain JSON data (cfn-lint's loader reads the !Ref/!Sub short forms)."""
    return json.loads(json.dumps(cfn_yaml.load(str(template_path))))


def template_parameters(template_path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The Parameters section of template.yaml."""
    return dict(_load_template(template_path).get("Parameters", {}))


def parameter_values(
    overrides: Mapping[str, str], template_path: Path = TEMPLATE_PATH
) -> dict[str, str]:
    """Every parameter's value for a stack deployed with `overrides`: theirs, else the
    template's default."""
    return _parameter_values(_load_template(template_path), overrides)


def _parameter_values(template: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    specs = template.get("Parameters", {})
    problems = parameter_problems(specs, overrides)
    if problems:
        raise TemplateError("; ".join(problems))
    values = {name: str(spec["Default"]) for name, spec in specs.items() if "Default" in spec}
    values.update(overrides)
    return values


def load_stack(
    physical: Mapping[str, str],
    *,
    parameters: Mapping[str, str] | None = None,
    region: str = "us-east-1",
    account: str = "123456789012",
    template_path: Path = TEMPLATE_PATH,
) -> StackSpec:
    """Transform template.yaml with the SAM translator and resolve it against local names.

    `physical` maps resource logical ids (and `<id>.Arn`-style attributes) to the names the
    local cloud created, e.g. {"DataBucket": "m5flow-local-data", ...}.
    """
    template = _load_template(template_path)
    code_dirs: dict[str, str] = {}
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for uri in ("CodeUri", "ContentUri"):
            if isinstance(props.get(uri), str):
                code_dirs[logical_id] = props[uri]
                # The translator wants packaged S3 URIs, as `sam deploy` gives it.
                props[uri] = f"s3://{_LOCAL_CODE_BUCKET}/{props[uri]}"
    saved_region = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region  # the translator reads the region from boto3
    try:
        translated = transform(copy.deepcopy(template), {}, _NoManagedPolicies())
    finally:
        if saved_region is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved_region
    # Where the template names a function by its ARN (the failure rule): the ARNs the local
    # runtime gives them.
    function_arns = {
        f"{logical_id}.Arn": function_arn(region, account, logical_id)
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    values = _parameter_values(template, parameters or {})
    resolve = _Resolver(values, {**function_arns, **physical}, region, account)
    resources = translated["Resources"]

    functions: dict[str, FunctionSpec] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        props = resource["Properties"]
        variables = props.get("Environment", {}).get("Variables", {})
        functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_dir=template_path.parent / code_dirs[logical_id],
            handler=props["Handler"],
            environment={k: str(v) for k, v in resolve(variables).items()},
            timeout=int(props.get("Timeout", 3)),
            memory_mb=int(props.get("MemorySize", 128)),
        )

    for resource in resources.values():
        if resource["Type"] != "AWS::Lambda::EventInvokeConfig":
            continue
        props = resource["Properties"]
        target = props["FunctionName"]["Ref"]
        destination = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        functions[target] = dataclasses.replace(
            functions[target],
            max_retry_attempts=int(props.get("MaximumRetryAttempts", 2)),
            on_failure_destination=None if destination is None else str(resolve(destination)),
        )

    rules = []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Events::Rule":
            continue
        props = resource["Properties"]
        targets = tuple(
            target["Arn"]["Fn::GetAtt"][0]
            for target in props.get("Targets", [])
            if isinstance(target.get("Arn"), dict) and "Fn::GetAtt" in target["Arn"]
        )
        rules.append(RuleSpec(logical_id, resolve(props["EventPattern"]), targets))
    return StackSpec(functions, rules, resources, resolve)
