"""Every event's `summary`: one readable sentence, safe for the e-mail rule's input transformer."""

from __future__ import annotations

import json
import re
import typing

import boto3
import pytest

from m5flow.notifications import SUMMARY_CHARS, DetailType, EventPublisher, summary
from m5flow_local.router.template import TEMPLATE_PATH, _load_template

RUN = {"run_id": "shop-1a2b", "dataset": "shop"}


@pytest.mark.parametrize(
    ("detail_type", "detail", "sentence"),
    [
        ("Run Started",
         {**RUN, "series": 290, "last_day": 1941, "models": ["h7", "h14", "h21", "h28"],
          "notices": ["prices: 3 weeks carried forward", "sales: 2 series never sold"],
          "hyperparameter_overrides": {"eta": "0.3", "max_depth": None}},
         "Run shop-1a2b of dataset shop started: 290 series up to day 1941, model(s) h7, h14, "
         "h21, h28 to train; prices: 3 weeks carried forward; sales: 2 series never sold; "
         "hyperparameters from m5flow.json: eta=0.3, max_depth=unset"),
        ("Run Started",  # a long setting neither hides the notices nor fills the line
         {**RUN, "series": 3, "last_day": 56, "models": ["h28"], "notices": "sales: odd",
          "hyperparameter_overrides": {"interaction_constraints": "x" * 950}},
         "Run shop-1a2b of dataset shop started: 3 series up to day 56, model(s) h28 to "
         "train; sales: odd; hyperparameters from m5flow.json: interaction_constraints="
         + "x" * 40 + "... (950 chars)"),
        ("Training Started",
         {**RUN, "training_jobs": ["j-h7", "j-h14"], "instance_type": "ml.m5.xlarge",
          "instances": {"j-h7": 1, "j-h14": 1}},
         "Run shop-1a2b of dataset shop: 2 training job(s) started on ml.m5.xlarge"),
        ("Training Started",
         {**RUN, "training_jobs": ["j-h7", "j-h14"], "instance_type": "ml.m5.xlarge",
          "instances": {"j-h7": 2, "j-h14": 3}},
         "Run shop-1a2b of dataset shop: 2 training job(s) started on ml.m5.xlarge, instances "
         "per job: j-h7 2, j-h14 3"),
        ("Training Started",
         {**RUN, "training_jobs": ["j-h7", "j-h14"], "instance_type": "ml.m5.xlarge",
          "instances": {"j-h7": 2, "j-h14": 2}},
         "Run shop-1a2b of dataset shop: 2 training job(s) started on ml.m5.xlarge, 2 "
         "instances each"),
        ("Training Started",  # a quota of two instances: the run's others wait
         {**RUN, "training_jobs": ["j-h7", "j-h14"], "instance_type": "ml.m5.xlarge",
          "instances": {"j-h7": 1, "j-h14": 1}, "waiting": ["j-h21", "j-h28"],
          "waiting_reason": "training job j-h21 waits for the quota (...)"},
         "Run shop-1a2b of dataset shop: 2 training job(s) started on ml.m5.xlarge; 2 more "
         "wait for the quota, and start as this run's jobs end"),
        ("Training Started",  # then one of them, as one of the run's jobs ended
         {**RUN, "training_jobs": ["j-h21"], "instance_type": "ml.m5.xlarge",
          "instances": {"j-h21": 1}, "waited": True},
         "Run shop-1a2b of dataset shop: training job j-h21 started on ml.m5.xlarge, after "
         "waiting for the quota"),
        ("Transform Started", {**RUN, "model": "h7", "transform_job": "t-h7"},
         "Run shop-1a2b of dataset shop: model h7 trained; its batch transform t-h7 started"),
        ("Transform Waiting",  # a transform quota of one: the run's others wait
         {**RUN, "model": "h14", "transform_job": "t-h14",
          "reason": "transform job t-h14 waits for the quota (...) and starts as this run's "
                    "transform jobs in progress end"},
         "Run shop-1a2b of dataset shop: model h14 trained: transform job t-h14 waits for the "
         "quota (...) and starts as this run's transform jobs in progress end"),
        ("Transform Waiting",  # a later pass of the recursive model
         {**RUN, "model": "r1", "transform_job": "t-r1-p3", "pass": 3, "passes": 5,
          "reason": "transform job t-r1-p3 waits"},
         "Run shop-1a2b of dataset shop: model r1, pass 3 of 5: transform job t-r1-p3 waits"),
        ("Transform Started",  # then one of them, as one of the run's transforms ended
         {**RUN, "model": "h14", "transform_job": "t-h14", "waited": True},
         "Run shop-1a2b of dataset shop: model h14 trained; its batch transform t-h14 "
         "started, after waiting for the quota"),
        ("Forecast Ready",
         {**RUN, "report": "s3://b/runs/shop-1a2b/forecast/report.html",
          "headline": {"series": 290, "scored_on": "truth", "wrmsse": 0.7479}},
         "Run shop-1a2b of dataset shop: the forecast of 290 series is ready, WRMSSE 0.7479 "
         "against the uploaded truth; report s3://b/runs/shop-1a2b/forecast/report.html"),
        ("Forecast Ready",
         {**RUN, "report": "s3://b/r.html",
          "headline": {"series": 3, "scored_on": "backtest", "backtest_wrmsse": 0.81}},
         "Run shop-1a2b of dataset shop: the forecast of 3 series is ready, backtest WRMSSE "
         "0.8100 (no truth was uploaded); report s3://b/r.html"),
        ("Forecast Ready",  # the recursive model trained on the backtest's days
         {**RUN, "report": "s3://b/r.html",
          "headline": {"series": 3, "scored_on": "backtest", "backtest_wrmsse": 0.81,
                       "backtest_models": ["h7", "h28"]}},
         "Run shop-1a2b of dataset shop: the forecast of 3 series is ready, backtest WRMSSE "
         "0.8100 of h7, h28 alone (no truth was uploaded); report s3://b/r.html"),
        ("Forecast Ready",  # a truth file that could not be used is said, not taken for none
         {**RUN, "report": "s3://b/r.html",
          "headline": {"series": 30490, "scored_on": "backtest", "backtest_wrmsse": 0.8,
                       "score_problems": ["not scored: truth.csv: one column ('id;F1')"]}},
         "Run shop-1a2b of dataset shop: the forecast of 30,490 series is ready, backtest "
         "WRMSSE 0.8000; not scored: truth.csv: one column ('id;F1'); report s3://b/r.html"),
        ("Backtest Lost",
         {**RUN, "stage": "training", "model": "h7-bt", "reason": "training job j-h7-bt Failed: x",
          "manifest": "s3://b/runs/shop-1a2b/manifest.json"},
         "Run shop-1a2b of dataset shop: its backtest is lost, the forecast goes on without a "
         "backtest score; backtest twin h7-bt failed at training: training job j-h7-bt Failed: x"),
        ("Forecast Ready",  # a run that lost its backtest, with no truth
         {**RUN, "report": "s3://b/r.html",
          "headline": {"series": 3, "scored_on": "nothing", "score_problems": [
              "no backtest score: backtest twin h7-bt failed at training: job j Failed: x"]}},
         "Run shop-1a2b of dataset shop: the forecast of 3 series is ready, no backtest score: "
         "backtest twin h7-bt failed at training: job j Failed: x; report s3://b/r.html"),
        ("Input Rejected",
         {**RUN, "stage": "shard", "reason": "a: row 2: found x; expected y; b: row 3",
          "reasons": ["a: row 2: found x; expected y", "b: row 3"]},
         "Run shop-1a2b of dataset shop: its upload was refused, 2 problem(s): a: row 2: "
         "found x; expected y; b: row 3"),
        ("Input Rejected",
         {"run_id": None, "dataset": "shop", "stage": "shard", "key": "raw/shop/x/y.csv",
          "reason": "nested folder", "reasons": ["nested folder"]},
         "Dataset shop: the upload raw/shop/x/y.csv was refused, 1 problem(s): nested folder"),
        ("Input Rejected",  # outside any dataset's folder
         {"run_id": None, "dataset": None, "stage": "shard", "key": "raw/stray.csv",
          "reason": "not in a dataset folder", "reasons": ["not in a dataset folder"]},
         "The upload raw/stray.csv was refused, 1 problem(s): not in a dataset folder"),
        ("Run Failed", {**RUN, "stage": "transform", "reason": "transform job t Failed: x"},
         "Run shop-1a2b of dataset shop failed at transform: transform job t Failed: x"),
        ("Run Failed",  # of no run: what failed, and on what
         {"run_id": None, "dataset": None, "stage": "shard", "reason": "Sandbox.Timedout",
          "function": "m5flow-ShardFunction", "trigger": "s3://b/raw/x.csv"},
         "A step failed at shard (m5flow-ShardFunction, on s3://b/raw/x.csv): Sandbox.Timedout"),
        ("Run Failed",  # a failure record that came without its event: no trigger
         {"run_id": None, "dataset": None, "stage": "shard", "reason": "Sandbox.Timedout",
          "function": "m5flow-ShardFunction"},
         "A step failed at shard (m5flow-ShardFunction): Sandbox.Timedout"),
        ("Forecast Ready",  # nothing scored: the problem says so once
         {**RUN, "report": "s3://b/r.html",
          "headline": {"series": 3, "scored_on": "nothing",
                       "score_problems": ["not scored: truth.csv: no day columns"]}},
         "Run shop-1a2b of dataset shop: the forecast of 3 series is ready, not scored: "
         "truth.csv: no day columns; report s3://b/r.html"),
    ],
)  # fmt: skip
def test_each_event_says_what_happened_in_one_sentence(detail_type, detail, sentence) -> None:
    assert summary(detail_type, detail) == sentence


@pytest.mark.parametrize("detail_type", typing.get_args(DetailType))
def test_a_detail_without_its_fields_or_with_odd_ones_still_has_a_summary(
    detail_type: DetailType,
) -> None:
    assert summary(detail_type, {"run_id": None, "dataset": None}).startswith("A step")
    odd = {**RUN, "headline": "x", "reasons": 5, "models": 4, "notices": 3, "training_jobs": 2}
    assert "run shop-1a2b of dataset shop" in summary(detail_type, odd).lower()
    assert summary(detail_type, {**RUN, "reason": "\ud800", "stage": "shard"}).isprintable()


def test_a_field_of_an_unexpected_type_gives_the_plain_summary() -> None:
    said = summary("Forecast Ready", {**RUN, "headline": "x"})  # "x".get raised
    assert said == "Forecast Ready: run shop-1a2b of dataset shop"

    class Unsayable:
        def __format__(self, spec: str) -> str:
            raise ValueError("no")

    assert summary("Run Failed", {**RUN, "run_id": Unsayable()}) == "Run Failed"


def test_a_summary_is_one_line_without_quotes_or_backslashes_and_cut() -> None:
    reason = 'cell "a\\b"\n\ttab\r\x00 <x>' + "z" * 5000
    line = summary("Run Failed", {**RUN, "stage": "shard", "reason": reason})
    assert line.startswith("Run shop-1a2b of dataset shop failed at shard: cell 'a/b' tab <x>zz")
    assert not {'"', "\\", "\n", "\r", "\t", "\x00"} & set(line)
    assert re.fullmatch(rf".{{{SUMMARY_CHARS}}}\.\.\. \(5,0\d\d chars\)", line)


def test_the_email_rule_sends_the_summary_of_every_terminal_event(moto_endpoint: str) -> None:
    """The template's own transformer, run by moto's EventBridge (which inserts values
    unescaped and needs the result to be JSON, as EventBridge does), on events the
    publisher sends: each arrives as the one line the e-mail says."""
    rule = _load_template(TEMPLATE_PATH)["Resources"]["NotificationRule"]["Properties"]
    (target,) = rule["Targets"]
    events, sqs = boto3.client("events"), boto3.client("sqs")
    url = sqs.create_queue(QueueName="email-text")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    pattern = {**rule["EventPattern"], "detail": {"dataset": ["mail"]}}  # this test's events
    events.put_rule(Name="email-text", EventPattern=json.dumps(pattern))
    transformer = target["InputTransformer"]
    events.put_targets(
        Rule="email-text",
        Targets=[{"Id": "q", "Arn": arn["QueueArn"], "InputTransformer": transformer}],
    )
    publisher = EventPublisher(events)
    nasty = 'sales.csv: row 2: found "3,5" in d_\\7\n(and a tab\there)'
    base = {"run_id": None, "dataset": "mail"}
    publisher.publish("Input Rejected", {**base, "reason": nasty, "reasons": [nasty]}, once=None)
    publisher.publish("Run Failed", {**base, "stage": "training", "reason": nasty}, once=None)
    publisher.publish("Run Started", {**base, "series": 1}, once=None)  # not e-mailed

    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])]  # fmt: skip
    said = "sales.csv: row 2: found '3,5' in d_/7 (and a tab here)"
    assert sorted(bodies) == [
        f"m5flow: Dataset mail failed at training: {said}",
        f"m5flow: Dataset mail: its upload was refused, 1 problem(s): {said}",
    ]
