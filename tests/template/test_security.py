"""template.yaml is private, encrypted and least-privilege, and failures end somewhere visible.

checkov scans the SAM template as written; the structural tests read the template as the SAM
translator expands it for CloudFormation (the roles SAM generates included), once per branch
of each optional feature (KMS key, notification e-mail, run retention).
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from m5flow import naming, recursive
from m5flow.images import xgboost_image_uri
from m5flow.notifications import TERMINAL
from m5flow_local.router.template import TEMPLATE_PATH, load_stack
from tests.template.test_template import SAMPLE_BUCKET, _tool

PIPELINE_FUNCTIONS = (
    "ShardFunction",
    "StartTrainingFunction",
    "PublishModelFunction",
    "AssembleForecastFunction",
)
FUNCTIONS = (*PIPELINE_FUNCTIONS, "ReportFailureFunction")
BUCKET_ARN = "${DataBucket.Arn}"
DEFAULT_BUS = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"
# Actions that have no resource type, so IAM accepts them only on "*" (each scoped otherwise).
RESOURCELESS_ACTIONS = {"cloudwatch:PutMetricData", "ecr:GetAuthorizationToken"}
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
# The AWS managed policy SAM attaches to every function role: CloudWatch Logs writes only.
SAM_BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


# --------------------------------------------------------------------------- the template


@pytest.fixture(scope="module")
def translated() -> dict[str, dict[str, Any]]:
    """Resources of template.yaml after the SAM transform (intrinsics left unresolved)."""
    stack = load_stack(
        {
            "DataBucket": SAMPLE_BUCKET,
            "DataBucket.Arn": f"arn:aws:s3:::{SAMPLE_BUCKET}",
            "SageMakerExecutionRole.Arn": "arn:aws:iam::123456789012:role/r",
        }
    )
    return stack.resources


_NO_VALUE = object()


def _pick(node: Any, conditions: dict[str, bool]) -> Any:
    """Evaluate Fn::If with the given condition values; drop AWS::NoValue."""
    if isinstance(node, list):
        picked = [_pick(item, conditions) for item in node]
        return [item for item in picked if item is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if node == {"Ref": "AWS::NoValue"}:
        return _NO_VALUE
    if set(node) == {"Fn::If"}:
        name, if_true, if_false = node["Fn::If"]
        return _pick(if_true if conditions[name] else if_false, conditions)
    picked = {key: _pick(value, conditions) for key, value in node.items()}
    return {key: value for key, value in picked.items() if value is not _NO_VALUE}


def _branch(translated, **conditions: bool) -> dict[str, dict[str, Any]]:
    """The resources CloudFormation creates with these condition values."""
    values = {"HasKmsKey": False, "HasNotificationEmail": False, "ExpireRuns": False}
    values.update(conditions)
    return {
        logical_id: _pick(resource, values)
        for logical_id, resource in translated.items()
        if values.get(resource.get("Condition", ""), True)
    }


BRANCHES = [
    pytest.param({}, id="defaults"),
    pytest.param(
        {"HasKmsKey": True, "HasNotificationEmail": True, "ExpireRuns": True}, id="all-options"
    ),
]


def _text(node: Any) -> str:
    """An ARN-ish node as text: Fn::Sub strings as written, GetAtt/Ref as ${...}."""
    if isinstance(node, str):
        return node
    if "Fn::Sub" in node:
        sub = node["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if "Fn::GetAtt" in node:
        target = node["Fn::GetAtt"]
        return "${" + (".".join(target) if isinstance(target, list) else target) + "}"
    if "Ref" in node:
        return "${" + node["Ref"] + "}"
    raise AssertionError(f"unexpected ARN node {node}")


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every statement of a role's inline policies or of a managed policy."""
    props = resource["Properties"]
    documents = [policy["PolicyDocument"] for policy in props.get("Policies", [])]
    if "PolicyDocument" in props:
        documents.append(props["PolicyDocument"])
    for document in documents:
        yield from _listed(document["Statement"])


def _identity_statements(resources) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in resources.items():
        if resource["Type"] in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy"):
            for statement in _statements(resource):
                yield logical_id, statement


def _role_of(resources, function: str) -> dict[str, Any]:
    role = resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
    return resources[role]


# --------------------------------------------------------------------------- checkov


def test_checkov_passes_with_every_skip_justified():
    result = subprocess.run(
        [
            _tool("checkov"),
            "-f", str(TEMPLATE_PATH),
            "--framework", "cloudformation",
            "--skip-download",
            "--output", "json",
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    report = json.loads(result.stdout)
    failed = [
        (check["check_id"], check["resource"]) for check in report["results"]["failed_checks"]
    ]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["parsing_errors"] == 0
    skipped = report["results"]["skipped_checks"]
    for check in skipped:
        comment = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(comment) > 30, f"{check['check_id']} on {check['resource']} needs a why"
    # Every function skips the same four checks, each justified next to it in the template.
    per_function = {
        check["resource"].rsplit(".", 1)[1]: set() for check in skipped
        if check["resource"].startswith("AWS::Serverless::Function.")
    }  # fmt: skip
    for check in skipped:
        kind, _, name = check["resource"].partition(".")
        if kind == "AWS::Serverless::Function":
            per_function[name].add(check["check_id"])
    assert per_function == {
        name: {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173"} for name in FUNCTIONS
    }


# --------------------------------------------------------------------------- IAM


@pytest.mark.parametrize("conditions", BRANCHES)
def test_no_statement_allows_everything(translated, conditions):
    for logical_id, statement in _identity_statements(_branch(translated, **conditions)):
        if statement["Effect"] != "Allow":
            continue
        actions = _listed(statement["Action"])
        resources = [_text(r) for r in _listed(statement["Resource"])]
        assert "*" not in actions, (logical_id, statement)
        # No service-wide wildcard either ("s3:*"): every action is named.
        assert not any(a.endswith(":*") for a in actions), (logical_id, statement)
        if "*" in resources:
            assert set(actions) <= RESOURCELESS_ACTIONS, (logical_id, statement)
            assert "Condition" in statement, (logical_id, statement)


@pytest.mark.parametrize("conditions", BRANCHES)
def test_roles_attach_only_the_stacks_policies(translated, conditions):
    resources = _branch(translated, **conditions)
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for arn in resource["Properties"].get("ManagedPolicyArns", []):
            assert arn == SAM_BASIC_EXECUTION or arn.get("Ref") in (
                "DataKeyPolicy",
                "JobKeyPolicy",
            ), (logical_id, arn)


def test_pass_role_only_passes_the_sagemaker_role_to_sagemaker(translated):
    passing = []
    for logical_id, statement in _identity_statements(_branch(translated, HasKmsKey=True)):
        actions = _listed(statement["Action"])
        if not any(a in ("iam:PassRole", "iam:*") for a in actions):
            continue
        passing.append(logical_id)
        assert actions == ["iam:PassRole"], (logical_id, statement)
        assert statement["Resource"] == {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}
        assert statement["Condition"] == {
            "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
        }
    assert sorted(passing) == ["PublishModelFunctionRole", "StartTrainingFunctionRole"]


def test_roles_trust_one_service_and_sagemaker_only_for_this_account_and_region(translated):
    """The function roles are SAM's (Lambda may take them); the jobs' role is taken by
    SageMaker only when it acts for a resource of this account and region, as AWS's
    confused-deputy guide has it for training jobs, models and transform jobs."""
    trusted = {}
    for logical_id, resource in _branch(translated).items():
        if resource["Type"] == "AWS::IAM::Role":
            (statement,) = _listed(resource["Properties"]["AssumeRolePolicyDocument"]["Statement"])
            assert statement["Effect"] == "Allow" and statement["Action"] in (
                "sts:AssumeRole",
                ["sts:AssumeRole"],
            ), logical_id
            (service,) = _listed(statement["Principal"]["Service"])
            trusted[logical_id] = (service, statement.get("Condition"))
    role = trusted.pop("SageMakerExecutionRole")
    assert {service for service, _ in trusted.values()} == {"lambda.amazonaws.com"}
    service, condition = role
    assert service == "sagemaker.amazonaws.com"
    (pattern,) = _listed(condition["ArnLike"]["aws:SourceArn"]["Fn::Sub"])
    here = {"${AWS::Partition}": "aws", "${AWS::Region}": "eu-west-1"}
    here["${AWS::AccountId}"] = "123456789012"
    for name, value in here.items():
        pattern = pattern.replace(name, value)
    ours = "arn:aws:sagemaker:eu-west-1:123456789012:"
    for source in ("training-job/m5flow-a-h7", "transform-job/m5flow-a-h7", "*"):
        assert fnmatch.fnmatchcase(ours + source, pattern), source
    for other in (
        "arn:aws:sagemaker:eu-west-1:210987654321:",
        "arn:aws:sagemaker:us-east-1:123456789012:",
    ):
        assert not fnmatch.fnmatchcase(other + "training-job/m5flow-a-h7", pattern), other


@pytest.mark.parametrize("conditions", BRANCHES)
def test_roles_reach_only_the_stacks_bucket_bus_and_jobs(translated, conditions):
    resources = _branch(translated, **conditions)
    allowed = (
        re.escape(BUCKET_ARN) + r"(/(raw|runs|events)/.*)?",
        re.escape(DEFAULT_BUS),
        # SAM writes the destination bus with the region it translated in.
        r"arn:aws:events:us-east-1:\$\{AWS::AccountId\}:event-bus/default",
        r"arn:\$\{AWS::Partition\}:sagemaker:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
        r"(training-job|model|transform-job)/m5flow-\*",
        r"arn:\$\{AWS::Partition\}:logs:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
        r"log-group:/aws/sagemaker/\*",
        re.escape("${SageMakerExecutionRole.Arn}"),
        re.escape("${KmsKeyArn}"),
        # The built-in image's repository, in whichever AWS account hosts it in the region.
        r"arn:\$\{AWS::Partition\}:ecr:\$\{AWS::Region\}:\*:repository/sagemaker-xgboost",
        r"\*",  # resourceless actions only (test_no_statement_allows_everything)
    )
    for logical_id, statement in _identity_statements(resources):
        for resource in _listed(statement["Resource"]):
            text = _text(resource)
            assert any(re.fullmatch(p, text) for p in allowed), (logical_id, text)


def test_functions_touch_only_sagemaker_jobs_and_models_tagged_with_their_stack(translated):
    """Job names share the m5flow- prefix across every stack in the account: the stack tag
    (m5flow.jobs.STACK_TAG, from STACK_NAME) keeps one stack's functions off another's."""
    from m5flow.jobs import STACK_TAG

    assert translated["ShardFunction"]["Properties"]["Environment"]["Variables"]["STACK_NAME"] == {
        "Ref": "AWS::StackName"
    }
    checked = 0
    for logical_id, statement in _identity_statements(_branch(translated, HasKmsKey=True)):
        actions = [a for a in _listed(statement["Action"]) if a.startswith("sagemaker:")]
        if not actions:
            continue
        creating = {a for a in actions if a.startswith("sagemaker:Create")} | (
            {"sagemaker:AddTags"} & set(actions)
        )
        stack = {"Ref": "AWS::StackName"}
        if actions in (["sagemaker:DescribeTrainingJob"], ["sagemaker:DescribeTransformJob"]):
            # Read-only, and must read a job from before the stack tagged its jobs.
            assert "Condition" not in statement, logical_id
        elif creating:
            assert creating == set(actions), (logical_id, actions)  # one kind a statement
            assert statement["Condition"] == {
                "StringEquals": {f"aws:RequestTag/{STACK_TAG}": stack},
                # AddTags on an existing resource: only one this stack tagged.
                "StringEqualsIfExists": {f"aws:ResourceTag/{STACK_TAG}": stack},
            }, (logical_id, actions)
        else:
            assert all(a.startswith("sagemaker:Stop") for a in actions), (logical_id, actions)
            assert statement["Condition"] == {
                "StringEquals": {f"aws:ResourceTag/{STACK_TAG}": stack}
            }, (logical_id, actions)
        checked += 1
    # start_training: create, describe, stop; publish_model: seven (a training job that
    # waited for the quota among them); assemble_forecast: the recursive model's later
    # passes' transforms and those that waited for the quota (create, describe, stop)
    assert checked == 13


def test_sagemaker_role_is_limited_to_the_runs_prefix(translated):
    role = _branch(translated, HasKmsKey=True)["SageMakerExecutionRole"]
    s3 = [s for s in _statements(role) if any(a.startswith("s3:") for a in _listed(s["Action"]))]
    assert s3
    for statement in s3:
        for resource in _listed(statement["Resource"]):
            text = _text(resource)
            if text == "${DataBucket.Arn}":  # listing, only under runs/
                assert _listed(statement["Action"]) == ["s3:ListBucket"]
                assert statement["Condition"] == {"StringLike": {"s3:prefix": ["runs/*"]}}
            else:
                assert text.startswith(f"{BUCKET_ARN}/runs/"), text
    writes = {
        _text(r)
        for s in s3
        if "s3:PutObject" in _listed(s["Action"])
        for r in _listed(s["Resource"])
    }
    assert writes == {f"{BUCKET_ARN}/runs/*/model/*", f"{BUCKET_ARN}/runs/*/predictions/*"}


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"])
def test_sagemaker_role_may_pull_from_the_built_in_image_repository_only(translated, region):
    """SageMaker pulls the job's image with the execution role's rights. Any account's
    `sagemaker-xgboost` repository in the region: the accounts are in m5flow.images, and a
    copy of that table in the template could drift from it."""
    role = _branch(translated)["SageMakerExecutionRole"]
    pulls = [s for s in _statements(role) if "ecr:BatchGetImage" in _listed(s["Action"])]
    assert len(pulls) == 1
    image = xgboost_image_uri(region)
    account, _, _, image_region, *_ = image.split("/")[0].split(".")
    partition = {"cn": "aws-cn", "us-gov": "aws-us-gov"}.get(region.rsplit("-", 2)[0], "aws")
    repository = f"arn:{partition}:ecr:{image_region}:{account}:repository/sagemaker-xgboost"
    (resource,) = _listed(pulls[0]["Resource"])
    pattern = _text(resource).replace("${AWS::Partition}", partition)
    assert fnmatch.fnmatchcase(repository, pattern.replace("${AWS::Region}", region))
    assert not fnmatch.fnmatchcase(
        repository.replace("sagemaker-xgboost", "other"), pattern.replace("${AWS::Region}", region)
    )
    token = next(
        s for s in _statements(role) if "ecr:GetAuthorizationToken" in _listed(s["Action"])
    )
    assert token["Condition"] == {"StringEquals": {"aws:RequestedRegion": {"Ref": "AWS::Region"}}}


def test_functions_write_only_where_their_step_writes(translated):
    def writes(function: str) -> set[str]:
        return {
            _text(r)
            for s in _statements(_role_of(translated, function))
            if "s3:PutObject" in _listed(s["Action"])
            for r in _listed(s["Resource"])
        }

    ledger = f"{BUCKET_ARN}/events/*"
    shards = {f"{BUCKET_ARN}/runs/*/{kind}/*" for kind in ("train", "validation", "inference")}
    assert writes("ShardFunction") == shards | {f"{BUCKET_ARN}/runs/*/manifest.json", ledger}
    assert writes("StartTrainingFunction") == {ledger}
    assert writes("PublishModelFunction") == {ledger}
    # and the inference shards of the recursive model's later passes (m5flow.recursive)
    assert writes("AssembleForecastFunction") == {
        f"{BUCKET_ARN}/runs/*/forecast/*",
        f"{BUCKET_ARN}/runs/*/inference/{naming.pass_name(recursive.MODEL, 1)[:-1]}*/*",
        ledger,
    }
    assert writes("ReportFailureFunction") == {ledger}


def test_kms_key_is_usable_by_every_role_that_touches_the_bucket(translated):
    resources = _branch(translated, HasKmsKey=True)
    for function in FUNCTIONS:
        attached = {
            arn["Ref"]
            for arn in _role_of(resources, function)["Properties"]["ManagedPolicyArns"]
            if isinstance(arn, dict)
        }
        expected = {"DataKeyPolicy"}
        if function in (
            "StartTrainingFunction",
            "PublishModelFunction",
            "AssembleForecastFunction",
        ):
            expected.add("JobKeyPolicy")  # they create the jobs that use the key
        assert attached == expected, function
    sagemaker = resources["SageMakerExecutionRole"]["Properties"]
    assert {arn["Ref"] for arn in sagemaker["ManagedPolicyArns"]} == {
        "DataKeyPolicy",
        "JobKeyPolicy",
    }
    for function in ("StartTrainingFunction", "PublishModelFunction"):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["KMS_KEY_ARN"] == {"Ref": "KmsKeyArn"}
    grant = next(
        s for s in _statements(resources["JobKeyPolicy"]) if s["Action"] == "kms:CreateGrant"
    )
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    # Without a key, none of it exists.
    default = _branch(translated)
    assert "DataKeyPolicy" not in default and "JobKeyPolicy" not in default


# --------------------------------------------------------------------------- the bucket


@pytest.mark.parametrize(("has_key", "algorithm"), [(False, "AES256"), (True, "aws:kms")])
def test_bucket_is_private_versioned_and_encrypted(translated, has_key, algorithm):
    bucket = _branch(translated, HasKmsKey=has_key)["DataBucket"]["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == algorithm
    if has_key:
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == {"Ref": "KmsKeyArn"}
        assert rule["BucketKeyEnabled"] is True
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogsBucket"}


def test_bucket_policy_refuses_anything_but_tls(translated):
    policy = translated["DataBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "DataBucket"}
    denials = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    insecure = next(s for s in denials if "Bool" in s.get("Condition", {}))
    assert insecure["Principal"] == "*" and insecure["Action"] == "s3:*"
    assert insecure["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {_text(r) for r in insecure["Resource"]} == {BUCKET_ARN, f"{BUCKET_ARN}/*"}
    old_tls = next(s for s in denials if "NumericLessThan" in s.get("Condition", {}))
    assert old_tls["Condition"] == {"NumericLessThan": {"s3:TlsVersion": "1.2"}}


@pytest.mark.parametrize("expire", [False, True])
def test_lifecycle_keeps_runs_unless_told_and_cleans_up_versions(translated, expire):
    rules = {
        rule["Id"]: rule
        for rule in _branch(translated, ExpireRuns=expire)["DataBucket"]["Properties"][
            "LifecycleConfiguration"
        ]["Rules"]
    }
    assert rules["AbortIncompleteUploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    for prefix in ("runs/", "events/"):
        (noncurrent,) = [
            r["NoncurrentVersionExpiration"]
            for r in rules.values()
            if r.get("Prefix") == prefix and "NoncurrentVersionExpiration" in r
        ]
        assert noncurrent == {"NoncurrentDays": 30}
    # Current objects expire only with RunRetentionDays > 0, and then runs/ with events/.
    expiring = {r["Prefix"] for r in rules.values() if "ExpirationInDays" in r}
    assert expiring == ({"runs/", "events/"} if expire else set())
    # S3 refuses a rule's legacy Prefix overlapping another's; and delete markers are
    # cleaned with or without a number of days.
    prefixes = [r.get("Prefix", "") for r in rules.values() if "Prefix" in r]
    assert len(prefixes) == len(set(prefixes)) == 2
    for rule in rules.values():
        if "Prefix" in rule:
            assert ("ExpirationInDays" in rule) != ("ExpiredObjectDeleteMarker" in rule), rule
    assert all(r.get("Prefix") != "raw/" for r in rules.values())  # user input is never touched


def test_access_logs_bucket_is_private_and_accepts_only_the_data_buckets_logs(translated):
    logs = translated["AccessLogsBucket"]["Properties"]
    assert all(logs["PublicAccessBlockConfiguration"].values())
    encryption = logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    statements = translated["AccessLogsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allow["Condition"]["ArnLike"] == {"aws:SourceArn": {"Fn::GetAtt": ["DataBucket", "Arn"]}}


# --------------------------------------------------------------------------- failures


def test_pipeline_functions_retry_then_send_failures_to_the_default_bus(translated):
    configs = {
        r["Properties"]["FunctionName"]["Ref"]: r["Properties"]
        for r in translated.values()
        if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    }
    assert set(configs) == set(FUNCTIONS)
    for function in PIPELINE_FUNCTIONS:
        config = configs[function]
        assert config["MaximumRetryAttempts"] == 2 and config["Qualifier"] == "$LATEST"
        destination = _text(config["DestinationConfig"]["OnFailure"]["Destination"])
        assert destination.endswith(":${AWS::AccountId}:event-bus/default"), destination
    # The reporter's own failures stay in the queue FailureRule fed it from.
    assert configs["ReportFailureFunction"]["DestinationConfig"] == {}


def test_failure_rule_feeds_the_queue_and_the_reporter(translated):
    rule = translated["FailureRule"]["Properties"]
    assert rule["EventPattern"]["source"] == ["lambda"]
    assert rule["EventPattern"]["detail-type"] == ["Lambda Function Invocation Result - Failure"]
    targets = {t["Id"]: t for t in rule["Targets"]}
    assert targets["FailureQueue"]["Arn"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}
    assert targets["ReportFailure"]["Arn"] == {"Fn::GetAtt": ["ReportFailureFunction", "Arn"]}
    assert targets["ReportFailure"]["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["FailureQueue", "Arn"]}
    }
    permission = translated["ReportFailurePermission"]["Properties"]
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": ["FailureRule", "Arn"]}


@pytest.mark.parametrize("email", [False, True])
def test_failure_queue_keeps_records_encrypted_for_14_days_and_alarms(translated, email):
    resources = _branch(translated, HasNotificationEmail=email)
    queue = resources["FailureQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    # Only the stack's rules may send to it: the failure rule, and every rule's dead-letter
    # config (events EventBridge could not deliver), the e-mail rule's too when it exists.
    statements = resources["FailureQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    senders = {arn["Fn::GetAtt"][0] for arn in allow["Condition"]["ArnEquals"]["aws:SourceArn"]}
    rules = {logical_id for logical_id, r in resources.items() if r["Type"] == "AWS::Events::Rule"}
    dead_lettered = {
        logical_id
        for logical_id in rules
        if any("DeadLetterConfig" in t for t in resources[logical_id]["Properties"]["Targets"])
    }
    assert senders == dead_lettered == rules and "FailureRule" in senders
    assert ("NotificationRule" in senders) is email
    alarm = resources["FailureAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["FailureQueue", "QueueName"]}}
    ]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


# --------------------------------------------------------------------------- notifications


def test_email_subscribes_to_the_terminal_events_through_an_encrypted_topic(translated):
    assert not any(
        name.startswith("Notification") for name in _branch(translated, HasNotificationEmail=False)
    )
    resources = _branch(translated, HasNotificationEmail=True)
    topic = resources["NotificationTopic"]["Properties"]
    # A key of the stack's own: EventBridge and CloudWatch cannot use alias/aws/sns.
    assert topic["KmsMasterKeyId"] == {"Ref": "NotificationKey"}
    key = resources["NotificationKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    services = {
        service
        for s in key["KeyPolicy"]["Statement"]
        for service in _listed(s["Principal"].get("Service", []))
    }
    assert services == {"events.amazonaws.com", "cloudwatch.amazonaws.com"}
    subscription = resources["NotificationSubscription"]["Properties"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == (
        "email",
        {"Ref": "NotificationEmail"},
    )
    rule = resources["NotificationRule"]["Properties"]
    assert rule["EventPattern"] == {"source": ["m5flow"], "detail-type": list(TERMINAL)}
    assert rule["Targets"] == [
        {
            "Id": "NotificationTopic",
            "Arn": {"Ref": "NotificationTopic"},
            # The e-mail is the event's summary (tests/unit/test_summaries.py), not its JSON.
            "InputTransformer": {
                "InputPathsMap": {"summary": "$.detail.summary"},
                "InputTemplate": '"m5flow: <summary>"',
            },
            "DeadLetterConfig": {"Arn": {"Fn::GetAtt": ["FailureQueue", "Arn"]}},
        }
    ]
    statements = resources["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    publishers = {
        s["Principal"]["Service"]: s["Condition"]["ArnEquals"]["aws:SourceArn"]
        for s in statements
        if s["Effect"] == "Allow"
    }
    assert publishers == {
        "events.amazonaws.com": {"Fn::GetAtt": ["NotificationRule", "Arn"]},
        "cloudwatch.amazonaws.com": {"Fn::GetAtt": ["FailureAlarm", "Arn"]},
    }
    assert resources["FailureAlarm"]["Properties"]["AlarmActions"] == [{"Ref": "NotificationTopic"}]
    assert "AlarmActions" not in _branch(translated)["FailureAlarm"]["Properties"]


# --------------------------------------------------------------------------- parameters


def test_each_function_logs_to_its_own_group_kept_for_log_retention_days(translated):
    functions = [
        logical_id for logical_id, r in translated.items() if r["Type"] == "AWS::Lambda::Function"
    ]
    assert len(functions) == 5
    for function in functions:
        group = translated[function]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        properties = translated[group]["Properties"]
        assert properties["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert properties["LogGroupName"] == {
            "Fn::Sub": f"/aws/lambda/${{AWS::StackName}}/{function}"
        }


def test_max_training_seconds_stays_within_what_sagemaker_takes():
    from cfnlint.decode import cfn_yaml

    parameter = cfn_yaml.load(str(TEMPLATE_PATH))["Parameters"]["MaxTrainingSeconds"]
    assert 60 <= parameter["MinValue"] <= parameter["Default"] <= parameter["MaxValue"]
    assert parameter["MaxValue"] <= 28 * 24 * 3600  # SageMaker refuses a longer MaxRuntime


def test_model_min_lags_reaches_the_shard_function(translated):
    variables = translated["ShardFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["MODEL_MIN_LAGS"] == {"Ref": "ModelMinLags"}


@pytest.mark.parametrize(
    ("parameter", "value", "allowed"),
    [
        ("ModelMinLags", "28", True),
        ("ModelMinLags", "7,14,21,28", True),
        ("ModelMinLags", "7,14", False),  # the last model must reach the horizon
        ("ModelMinLags", "7, 28", False),
        ("KmsKeyArn", "", True),
        ("KmsKeyArn", f"arn:aws:kms:us-east-1:123456789012:key/{KEY_ID}", True),
        ("KmsKeyArn", "alias/aws/s3", False),  # IAM policies need the key's ARN
        ("NotificationEmail", "", True),
        ("NotificationEmail", "ops@example.com", True),
        ("NotificationEmail", "ops@example.com,dev@example.com", False),
        ("Hyperparameters", "{}", True),
        ("Hyperparameters", '{\n  "eta": "0.1"\n}', True),  # as a file would hold it
        ("Hyperparameters", "eta=0.1", False),
        ("Hyperparameters", "", False),
        ("TrainingInstanceCount", "auto", True),
        ("TrainingInstanceCount", "1", True),
        ("TrainingInstanceCount", "20", True),
        ("TrainingInstanceCount", "0", False),
        ("TrainingInstanceCount", "21", False),
        ("TrainingInstanceCount", "Auto", False),
        ("TrainingInstanceCount", "", False),
        ("TrainingInstanceType", "ml.m5.xlarge", True),
        ("TrainingInstanceType", "ml.p4de.24xlarge", True),
        ("TrainingInstanceType", "m5.xlarge", False),  # SageMaker types start with ml.
        ("TransformInstanceType", "ml.c5.large", True),
        ("TransformInstanceType", "ml.m5.xlarge ", False),
    ],
)  # fmt: skip
def test_parameter_patterns(parameter, value, allowed):
    from cfnlint.decode import cfn_yaml

    pattern = cfn_yaml.load(str(TEMPLATE_PATH))["Parameters"][parameter]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is allowed
