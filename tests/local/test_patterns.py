"""EventBridge event-pattern semantics of the local router (local/router/patterns.py).

Cases follow the EventBridge user guide's examples ("Comparison operators", "Arrays",
"Null values") and Event Ruler's README where the guide is silent.
"""

from __future__ import annotations

from typing import Any

import pytest

from m5flow_local.router.patterns import InvalidEventPatternError, matches, validate_pattern

BUCKET = "my-bucket"
RAW_INPUTS = {
    "source": ["aws.s3"],
    "detail-type": ["Object Created"],
    "detail": {
        "bucket": {"name": [BUCKET]},
        "object": {"key": [{"wildcard": "raw/*.csv"}, {"wildcard": "raw/*.CSV"}]},
    },
}
MANIFESTS = {
    "source": ["aws.s3"],
    "detail-type": ["Object Created"],
    "detail": {
        "bucket": {"name": [BUCKET]},
        "object": {"key": [{"wildcard": "runs/*/manifest.json"}]},
    },
}
TRAINING_DONE = {
    "source": ["aws.sagemaker"],
    "detail-type": ["SageMaker Training Job State Change"],
    "detail": {
        "TrainingJobStatus": ["Completed", "Failed", "Stopped"],
        "TrainingJobName": [{"prefix": "m5flow-"}],
    },
}
TRANSFORM_DONE = {
    "source": ["aws.sagemaker"],
    "detail-type": ["SageMaker Transform Job State Change"],
    "detail": {
        "TransformJobStatus": ["Completed", "Failed", "Stopped"],
        "TransformJobName": [{"prefix": "m5flow-"}],
    },
}


def detail(field: str, values: list[Any]) -> dict[str, Any]:
    return {"detail": {field: values}}


def s3_event(key: str, bucket: str = BUCKET, detail_type: str = "Object Created") -> dict:
    return {
        "source": "aws.s3",
        "detail-type": detail_type,
        "detail": {"bucket": {"name": bucket}, "object": {"key": key, "size": 5}},
    }


def sagemaker_event(kind: str, name: str, status: str) -> dict:
    return {
        "source": "aws.sagemaker",
        "detail-type": f"SageMaker {kind} Job State Change",
        "detail": {f"{kind}JobName": name, f"{kind}JobStatus": status},
    }


CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # --- exact values: OR within a field's array, AND across fields, nesting
    ("string", {"source": ["aws.s3"]}, {"source": "aws.s3"}, True),
    ("string other", {"source": ["aws.s3"]}, {"source": "aws.ec2"}, False),
    ("string case-sensitive", {"source": ["aws.s3"]}, {"source": "AWS.S3"}, False),
    ("or within array", {"source": ["aws.ec2", "aws.s3"]}, {"source": "aws.s3"}, True),
    ("and across fields", {"source": ["aws.s3"], "region": ["us-east-1"]},
     {"source": "aws.s3", "region": "eu-west-1"}, False),
    ("nested", {"detail": {"bucket": {"name": ["b"]}}}, {"detail": {"bucket": {"name": "b"}}},
     True),
    ("nested other", {"detail": {"bucket": {"name": ["b"]}}}, {"detail": {"bucket": {"name": "c"}}},
     False),
    ("missing field", {"detail": {"state": ["on"]}}, {"detail": {}}, False),
    ("missing parent", {"detail": {"state": ["on"]}}, {"source": "x"}, False),
    ("number", detail("n", [300]), detail("n", 3.0e2), True),
    ("number other", detail("n", [300]), detail("n", 301), False),
    ("number never string", detail("n", [300]), detail("n", "300"), False),
    ("string never number", detail("n", ["300"]), detail("n", 300), False),
    ("null", detail("r", [None]), detail("r", None), True),
    ("null is not empty string", detail("r", [""]), detail("r", None), False),
    ("empty string", detail("r", [""]), detail("r", ""), True),
    ("true", detail("b", [True]), detail("b", True), True),
    ("true is not 1", detail("b", [True]), detail("b", 1), False),
    ("1 is not true", detail("b", [1]), detail("b", True), False),
    ("false", detail("b", [False]), detail("b", False), True),
    ("object is no leaf", detail("x", ["a"]), detail("x", {"a": 1}), False),
    # --- event arrays: any element; objects in arrays match whole (Event Ruler)
    ("array any element", {"resources": ["arn:b"]}, {"resources": ["arn:a", "arn:b"]}, True),
    ("array no element", {"resources": ["arn:c"]}, {"resources": ["arn:a", "arn:b"]}, False),
    ("empty array", {"resources": ["arn:c"]}, {"resources": []}, False),
    ("nested arrays", detail("x", [3]), detail("x", [[1], [2, [3]]]), True),
    ("array of objects",
     {"employees": {"firstName": ["Anna"]}},
     {"employees": [{"firstName": "John"}, {"firstName": "Anna"}]}, True),
    ("array of objects, same element",
     {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}},
     {"employees": [{"firstName": "Anna", "lastName": "Smith"}, {"firstName": "Peter",
                                                                  "lastName": "Jones"}]}, True),
    ("array of objects, never across elements",
     {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}},
     {"employees": [{"firstName": "Anna", "lastName": "Smith"}, {"firstName": "Peter",
                                                                  "lastName": "Jones"}]}, False),
    # --- prefix / suffix, with and without equals-ignore-case
    ("prefix", {"time": [{"prefix": "2017-10-02"}]}, {"time": "2017-10-02T18:43:48Z"}, True),
    ("prefix other", {"time": [{"prefix": "2017-10-02"}]}, {"time": "2017-10-03T18:43:48Z"}, False),
    ("prefix case-sensitive", detail("s", [{"prefix": "EventB"}]), detail("s", "eventbridge"),
     False),
    ("prefix only strings", detail("n", [{"prefix": "12"}]), detail("n", 123), False),
    ("empty prefix: any string", detail("s", [{"prefix": ""}]), detail("s", "x"), True),
    ("empty prefix: not a number", detail("s", [{"prefix": ""}]), detail("s", 1), False),
    ("prefix ignore case", detail("s", [{"prefix": {"equals-ignore-case": "EventB"}}]),
     detail("s", "eVENTbridge"), True),
    ("prefix ignore case other", detail("s", [{"prefix": {"equals-ignore-case": "EventB"}}]),
     detail("s", "Bridge"), False),
    ("suffix", detail("f", [{"suffix": ".png"}]), detail("f", "a/b.png"), True),
    ("suffix other", detail("f", [{"suffix": ".png"}]), detail("f", "a/b.PNG"), False),
    ("suffix ignore case", detail("f", [{"suffix": {"equals-ignore-case": ".png"}}]),
     detail("f", "a/b.PNG"), True),
    ("suffix ignore case other", detail("f", [{"suffix": {"equals-ignore-case": ".png"}}]),
     detail("f", "a/b.jpg"), False),
    # --- equals-ignore-case
    ("equals-ignore-case", detail("n", [{"equals-ignore-case": "alice"}]), detail("n", "ALICE"),
     True),
    ("equals-ignore-case whole value", detail("n", [{"equals-ignore-case": "alice"}]),
     detail("n", "alicea"), False),
    ("equals-ignore-case only strings", detail("n", [{"equals-ignore-case": "1"}]),
     detail("n", 1), False),
    # --- anything-but
    ("anything-but string", detail("state", [{"anything-but": "initializing"}]),
     detail("state", "running"), True),
    ("anything-but string same", detail("state", [{"anything-but": "initializing"}]),
     detail("state", "initializing"), False),
    ("anything-but missing field", detail("state", [{"anything-but": "initializing"}]),
     {"detail": {}}, False),
    ("anything-but other type", detail("x", [{"anything-but": "123"}]), detail("x", 123), True),
    ("anything-but number", detail("x", [{"anything-but": 123}]), detail("x", 124), True),
    ("anything-but number same", detail("x", [{"anything-but": 123}]), detail("x", 123.0), False),
    ("anything-but string list", detail("state", [{"anything-but": ["stopped", "overloaded"]}]),
     detail("state", "running"), True),
    ("anything-but string list hit", detail("state", [{"anything-but": ["stopped", "overloaded"]}]),
     detail("state", "overloaded"), False),
    ("anything-but number list", detail("x", [{"anything-but": [100, 200, 300]}]),
     detail("x", 250), True),
    ("anything-but number list hit", detail("x", [{"anything-but": [100, 200, 300]}]),
     detail("x", 200), False),
    ("anything-but array, one element left", detail("s", [{"anything-but": "a"}]),
     detail("s", ["a", "b"]), True),
    ("anything-but array, none left", detail("s", [{"anything-but": "a"}]), detail("s", ["a"]),
     False),
    ("anything-but prefix", detail("r", [{"anything-but": {"prefix": "us-"}}]),
     detail("r", "eu-west-1"), True),
    ("anything-but prefix hit", detail("r", [{"anything-but": {"prefix": "us-"}}]),
     detail("r", "us-east-1"), False),
    ("anything-but prefix, not a string", detail("r", [{"anything-but": {"prefix": "us-"}}]),
     detail("r", 5), True),
    ("anything-but suffix", detail("f", [{"anything-but": {"suffix": ".png"}}]),
     detail("f", "a.jpg"), True),
    ("anything-but suffix hit", detail("f", [{"anything-but": {"suffix": ".png"}}]),
     detail("f", "a.png"), False),
    ("anything-but ignore case", detail("s", [{"anything-but": {"equals-ignore-case": "init"}}]),
     detail("s", "running"), True),
    ("anything-but ignore case hit",
     detail("s", [{"anything-but": {"equals-ignore-case": ["init", "stop"]}}]),
     detail("s", "STOP"), False),
    ("anything-but wildcard", detail("p", [{"anything-but": {"wildcard": "*/lib/*"}}]),
     detail("p", "/usr/bin/x"), True),
    ("anything-but wildcard hit", detail("p", [{"anything-but": {"wildcard": "*/lib/*"}}]),
     detail("p", "/usr/lib/x"), False),
    # --- numeric
    ("numeric >", detail("c", [{"numeric": [">", 0]}]), detail("c", 0.5), True),
    ("numeric > boundary", detail("c", [{"numeric": [">", 0]}]), detail("c", 0), False),
    ("numeric >=", detail("c", [{"numeric": [">=", 0]}]), detail("c", 0), True),
    ("numeric <", detail("c", [{"numeric": ["<", 10]}]), detail("c", 10), False),
    ("numeric <=", detail("c", [{"numeric": ["<=", 10]}]), detail("c", 10), True),
    ("numeric =", detail("c", [{"numeric": ["=", 3.018e2]}]), detail("c", 301.8), True),
    ("numeric = other", detail("c", [{"numeric": ["=", 3.018e2]}]), detail("c", 301.9), False),
    ("numeric range in", detail("c", [{"numeric": [">", 0, "<=", 5]}]), detail("c", 5), True),
    ("numeric range low", detail("c", [{"numeric": [">", 0, "<=", 5]}]), detail("c", 0), False),
    ("numeric range high", detail("c", [{"numeric": [">=", 0, "<", 5]}]), detail("c", 5), False),
    ("numeric only numbers", detail("c", [{"numeric": [">", 0]}]), detail("c", "5"), False),
    ("numeric not booleans", detail("c", [{"numeric": [">", 0]}]), detail("c", True), False),
    ("numeric array element", detail("c", [{"numeric": [">", 10]}]), detail("c", [1, 20]), True),
    # --- exists: leaves only
    ("exists true", detail("c", [{"exists": True}]), detail("c", 1), True),
    ("exists true missing", detail("c", [{"exists": True}]), {"detail": {}}, False),
    ("exists true null", detail("c", [{"exists": True}]), detail("c", None), True),
    ("exists true object", detail("c", [{"exists": True}]), detail("c", {"c1": 100}), False),
    ("exists false missing", detail("c", [{"exists": False}]), {"detail": {"state": "x"}}, True),
    ("exists false present", detail("c", [{"exists": False}]), detail("c", 5), False),
    ("exists false object", detail("c", [{"exists": False}]), detail("c", {"c1": 100}), True),
    ("exists false empty array", detail("c", [{"exists": False}]), detail("c", []), True),
    ("exists false, no parent", detail("c", [{"exists": False}]), {"source": "x"}, True),
    ("exists or value", detail("c", [{"exists": False}, "x"]), detail("c", "x"), True),
    # --- wildcard: * crosses "/", escapes
    ("wildcard", detail("k", [{"wildcard": "raw/*/a.csv"}]), detail("k", "raw/d/a.csv"), True),
    ("wildcard crosses /", detail("k", [{"wildcard": "raw/*/a.csv"}]), detail("k", "raw/d/e/a.csv"),
     True),
    ("wildcard anchored end", detail("k", [{"wildcard": "raw/*/a.csv"}]),
     detail("k", "raw/d/a.csv.bak"), False),
    ("wildcard anchored start", detail("k", [{"wildcard": "raw/*/a.csv"}]),
     detail("k", "x/raw/d/a.csv"), False),
    ("wildcard empty run", detail("k", [{"wildcard": "raw/*/a.csv"}]), detail("k", "raw//a.csv"),
     True),
    ("wildcard no overlap", detail("k", [{"wildcard": "ab*ba"}]), detail("k", "aba"), False),
    ("wildcard two stars", detail("k", [{"wildcard": "*/lib/*"}]), detail("k", "/usr/lib/x"), True),
    ("wildcard middle runs in order", detail("k", [{"wildcard": "a*b*c"}]), detail("k", "acb"),
     False),
    ("wildcard no star", detail("k", [{"wildcard": "abc"}]), detail("k", "abc"), True),
    ("wildcard escaped star", detail("k", [{"wildcard": "a\\*b"}]), detail("k", "a*b"), True),
    ("wildcard escaped star is literal", detail("k", [{"wildcard": "a\\*b"}]), detail("k", "axb"),
     False),
    ("wildcard escaped backslash", detail("k", [{"wildcard": "a\\\\*"}]), detail("k", "a\\xyz"),
     True),
    ("wildcard ? is literal", detail("k", [{"wildcard": "a?c"}]), detail("k", "abc"), False),
    ("wildcard only strings", detail("k", [{"wildcard": "1*"}]), detail("k", 12), False),
    # --- cidr
    ("cidr", detail("ip", [{"cidr": "10.0.0.0/24"}]), detail("ip", "10.0.0.24"), True),
    ("cidr outside", detail("ip", [{"cidr": "10.0.0.0/24"}]), detail("ip", "10.0.1.1"), False),
    ("cidr host bits floored", detail("ip", [{"cidr": "10.0.0.5/24"}]), detail("ip", "10.0.0.1"),
     True),
    ("cidr ipv6", detail("ip", [{"cidr": "2001:db8::/32"}]), detail("ip", "2001:db8::1"), True),
    ("cidr other family", detail("ip", [{"cidr": "0.0.0.0/0"}]), detail("ip", "::1"), False),
    ("cidr not an address", detail("ip", [{"cidr": "10.0.0.0/8"}]), detail("ip", "10.x"), False),
    ("cidr not a number", detail("ip", [{"cidr": "10.0.0.0/8"}]), detail("ip", 167772161), False),
    # --- $or
    ("$or first", {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPU"]},
                                                        {"namespace": ["AWS/EC2"]}]},
     {"source": "aws.cloudwatch", "metricName": "CPU"}, True),
    ("$or second", {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPU"]},
                                                         {"namespace": ["AWS/EC2"]}]},
     {"source": "aws.cloudwatch", "namespace": "AWS/EC2"}, True),
    ("$or neither", {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPU"]},
                                                          {"namespace": ["AWS/EC2"]}]},
     {"source": "aws.cloudwatch", "namespace": "AWS/ES"}, False),
    ("$or and outer field", {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPU"]},
                                                                  {"namespace": ["AWS/EC2"]}]},
     {"source": "aws.ec2", "metricName": "CPU"}, False),
    ("$or nested", {"detail": {"$or": [{"c": [{"numeric": [">", 0]}]}, {"d": [{"exists": True}]}]}},
     {"detail": {"c": -1, "d": "x"}}, True),
    ("$or branch with AND", {"$or": [{"a": ["1"], "b": ["2"]}, {"c": ["3"]}]},
     {"a": "1", "b": "3"}, False),
    # --- the patterns m5flow routes on
    ("raw: sales", RAW_INPUTS, s3_event("raw/demo/sales_train_evaluation.csv"), True),
    ("raw: calendar", RAW_INPUTS, s3_event("raw/demo/calendar.csv"), True),
    ("raw: prices", RAW_INPUTS, s3_event("raw/demo/sell_prices.csv"), True),
    ("raw: nested dataset", RAW_INPUTS, s3_event("raw/2025/q1/calendar.csv"), True),
    # The step itself ignores the truth and refuses a CSV it can never use, with the reason.
    ("raw: optional truth", RAW_INPUTS, s3_event("raw/demo/sales_test_evaluation.csv"), True),
    ("raw: kaggle's first stage", RAW_INPUTS, s3_event("raw/demo/sales_train_validation.csv"),
     True),
    ("raw: overrides", RAW_INPUTS, s3_event("raw/demo/m5flow.json"), False),
    ("raw: not a csv", RAW_INPUTS, s3_event("raw/demo/calendar.csv.gz"), False),
    ("raw: capital letters", RAW_INPUTS, s3_event("raw/demo/CALENDAR.CSV"), True),
    ("raw: no dataset folder", RAW_INPUTS, s3_event("raw/calendar.csv"), True),
    ("raw: other bucket", RAW_INPUTS, s3_event("raw/demo/calendar.csv", bucket="other"), False),
    ("raw: deleted", RAW_INPUTS, s3_event("raw/demo/calendar.csv", detail_type="Object Deleted"),
     False),
    ("raw: manifest", RAW_INPUTS, s3_event("runs/demo-1/manifest.json"), False),
    ("manifest", MANIFESTS, s3_event("runs/demo-3f2a9c1b7e4d/manifest.json"), True),
    ("manifest: shard", MANIFESTS, s3_event("runs/demo-3f2a9c1b7e4d/train/part-0.parquet"), False),
    ("manifest: raw input", MANIFESTS, s3_event("raw/demo/calendar.csv"), False),
    ("manifest: other bucket", MANIFESTS, s3_event("runs/r/manifest.json", bucket="x"), False),
    ("training completed", TRAINING_DONE, sagemaker_event("Training", "m5flow-r", "Completed"),
     True),
    ("training failed", TRAINING_DONE, sagemaker_event("Training", "m5flow-r", "Failed"), True),
    ("training stopped", TRAINING_DONE, sagemaker_event("Training", "m5flow-r", "Stopped"), True),
    ("training in progress", TRAINING_DONE, sagemaker_event("Training", "m5flow-r", "InProgress"),
     False),
    ("training of another app", TRAINING_DONE,
     sagemaker_event("Training", "other-m5flow-r", "Completed"), False),
    ("training rule, transform event", TRAINING_DONE,
     sagemaker_event("Transform", "m5flow-r", "Completed"), False),
    ("transform completed", TRANSFORM_DONE, sagemaker_event("Transform", "m5flow-r", "Completed"),
     True),
    ("transform failed", TRANSFORM_DONE, sagemaker_event("Transform", "m5flow-r", "Failed"), True),
    ("transform stopping", TRANSFORM_DONE, sagemaker_event("Transform", "m5flow-r", "Stopping"),
     False),
    ("transform rule, training event", TRANSFORM_DONE,
     sagemaker_event("Training", "m5flow-r", "Completed"), False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_matches(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, event) is expected


INVALID: list[tuple[str, Any, str]] = [
    ("not an object", ["aws.s3"], "must be a JSON object"),
    ("empty pattern", {}, "empty objects"),
    ("empty nested object", {"detail": {}}, "detail: empty objects"),
    ("scalar value", {"source": "aws.s3"}, "source: expected an object or a non-empty array"),
    ("empty array", {"source": []}, "source: expected an object or a non-empty array"),
    ("array in array", {"source": [["a"]]}, "source[0]: expected a string, number"),
    ("unknown operator", detail("x", [{"contains": "a"}]), "detail.x[0]: expected a string"),
    ("two operators", detail("x", [{"prefix": "a", "suffix": "b"}]), "one operator"),
    ("prefix number", detail("x", [{"prefix": 1}]), "detail.x[0].prefix: expected a string"),
    ("prefix nested other", detail("x", [{"prefix": {"wildcard": "a"}}]), "prefix: expected"),
    ("suffix null", detail("x", [{"suffix": None}]), "suffix: expected a string"),
    ("equals-ignore-case list", detail("x", [{"equals-ignore-case": ["a"]}]), "a string"),
    ("wildcard consecutive stars", detail("k", [{"wildcard": "a**b"}]), "wildcard: expected"),
    ("wildcard bad escape", detail("k", [{"wildcard": "a\\b"}]), "wildcard: expected"),
    ("wildcard trailing backslash", detail("k", [{"wildcard": "a\\"}]), "wildcard: expected"),
    ("numeric not a list", detail("c", [{"numeric": 5}]), "numeric: expected [op, n]"),
    ("numeric unknown op", detail("c", [{"numeric": ["!=", 5]}]), "numeric: expected"),
    ("numeric string bound", detail("c", [{"numeric": [">", "5"]}]), "numeric: expected"),
    ("numeric boolean bound", detail("c", [{"numeric": [">", True]}]), "numeric: expected"),
    ("numeric upper bound first", detail("c", [{"numeric": ["<", 5, ">", 1]}]), "numeric"),
    ("numeric empty range", detail("c", [{"numeric": [">", 5, "<", 5]}]), "low < high"),
    ("numeric three terms", detail("c", [{"numeric": [">", 5, "<"]}]), "numeric"),
    ("numeric too large", detail("c", [{"numeric": [">", 6e9]}]), "within +-5e+09"),
    ("exists string", detail("c", [{"exists": "true"}]), "exists: expected true or false"),
    ("cidr no mask", detail("ip", [{"cidr": "10.0.0.1"}]), "cidr: expected an IP block"),
    ("cidr full mask", detail("ip", [{"cidr": "10.0.0.1/32"}]), "cidr: expected"),
    ("cidr ipv6 full mask", detail("ip", [{"cidr": "::1/128"}]), "cidr: expected"),
    ("cidr bad address", detail("ip", [{"cidr": "10.0.0/8"}]), "cidr: expected"),
    ("anything-but mixed list", detail("s", [{"anything-but": ["a", 1]}]), "anything-but"),
    ("anything-but empty list", detail("s", [{"anything-but": []}]), "anything-but"),
    ("anything-but boolean", detail("s", [{"anything-but": True}]), "anything-but"),
    ("anything-but null", detail("s", [{"anything-but": None}]), "anything-but"),
    ("anything-but empty prefix", detail("s", [{"anything-but": {"prefix": ""}}]), "anything-but"),
    ("anything-but exists", detail("s", [{"anything-but": {"exists": True}}]), "anything-but"),
    ("anything-but numeric", detail("s", [{"anything-but": {"numeric": [">", 1]}}]),
     "anything-but"),
    ("anything-but bad wildcard", detail("s", [{"anything-but": {"wildcard": "**"}}]),
     "anything-but"),
    ("$or one branch", {"$or": [{"a": ["1"]}]}, "$or: expected 2+ objects"),
    ("$or not a list", {"$or": {"a": ["1"]}}, "$or: expected 2+ objects"),
    ("$or scalar branch", {"$or": [{"a": ["1"]}, "b"]}, "$or: expected 2+ objects"),
    ("$or empty branch", {"$or": [{"a": ["1"]}, {}]}, "$or[1]: empty objects"),
    ("$or invalid branch", {"detail": {"$or": [{"a": ["1"]}, {"b": [{"exists": 1}]}]}},
     "detail.$or[1].b[0].exists"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_validate_pattern_rejects(pattern: Any, message: str) -> None:
    with pytest.raises(InvalidEventPatternError) as raised:
        validate_pattern(pattern)
    assert message in str(raised.value)


def test_matches_validates_the_pattern() -> None:
    with pytest.raises(InvalidEventPatternError, match=r"detail\.k\[0\]\.wildcard"):
        matches(detail("k", [{"wildcard": "a**"}]), detail("k", "a"))


def test_wildcard_is_linear_on_near_misses() -> None:
    # A translated regex backtracks exponentially here; the matcher must not.
    pattern = detail("k", [{"wildcard": "*a*a*a*a*a*a*a*a*a*a*b"}])
    assert not matches(pattern, detail("k", "a" * 5000))
