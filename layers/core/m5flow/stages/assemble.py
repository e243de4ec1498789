"""Assemble step: a transform finished; the last of a run's transforms writes the forecast.

Fan-in without waiting: each transform's completion checks once whether every model of the
manifest has its outputs; only a completion that finds them all assembles, and the ledger
makes sure `Forecast Ready` is announced once even when two finish together. A completed
pass of the recursive model other than its last instead writes the next pass's shards and
starts its transform (m5flow.recursive): the step that hears of each transform's end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from aws_lambda_powertools import Logger

from m5flow import forecast, jobs, naming, recursive, report, schema, scoring, submission
from m5flow.exceptions import RunFailedError, ScoringError
from m5flow.features import series_facts
from m5flow.hierarchy import Hierarchy
from m5flow.manifest import Manifest, ModelShards, ShardInfo
from m5flow.notifications import FORECAST_READY, EventPublisher, Stage
from m5flow.schema import HORIZON, M5Data
from m5flow.shards import encode_inference
from m5flow.stages.backtest_loss import job_failed, lose_backtest, lost_backtest
from m5flow.stages.failure import announce_run_failure, failure_name
from m5flow.stages.transforms import announce_transform, start_transform, start_waiting_transforms
from m5flow.storage import ObjectChangedError, ObjectMissingError, Storage
from m5flow.wording import listed

logger = Logger(child=True)
BACKTEST_NOTE = (
    f"validation window, forecast from the days before it; {report.EARLY_STOPPED}, so it "
    "is optimistic"
)


def _output_key(manifest: Manifest, name: str, input_key: str) -> str:
    """Where the transform `name` (a model, or a pass of one) writes its input's output."""
    relative = input_key.removeprefix(naming.channel_prefix(manifest.run_id, "inference", name))
    return f"{naming.channel_prefix(manifest.run_id, 'predictions', name)}{relative}.out"


def _pass_inputs(manifest: Manifest, model: ModelShards, number: int) -> list[ShardInfo]:
    """The inference shards of a model's pass `number`: pass 0's are the manifest's, a
    later pass's have the same names and rows under the pass's own prefix."""
    if number == 0:
        return model.inference
    first = naming.channel_prefix(manifest.run_id, "inference", model.name)
    own = naming.channel_prefix(manifest.run_id, "inference", naming.pass_name(model.name, number))
    return [replace(s, key=own + s.key.removeprefix(first)) for s in model.inference]


def _pass_outputs(manifest: Manifest, model: ModelShards, number: int) -> list[tuple[str, int]]:
    """(output key, rows) of each inference shard of the model's pass `number`."""
    name = naming.pass_name(model.name, number)
    return [
        (_output_key(manifest, name, s.key), s.rows) for s in _pass_inputs(manifest, model, number)
    ]


def _missing_outputs(
    storage: Storage, manifest: Manifest, model: ModelShards, number: int | None = None
) -> list[str]:
    """The inference shards of the model's pass `number` (its last by default) that have
    no transform output (`.out`) yet."""
    number = model.last_pass if number is None else number
    name = naming.pass_name(model.name, number)
    have = set(storage.list(naming.channel_prefix(manifest.run_id, "predictions", name)))
    return [
        shard.key
        for shard in _pass_inputs(manifest, model, number)
        if _output_key(manifest, name, shard.key) not in have
    ]


def _awaited(manifest: Manifest, backtest_lost: bool) -> list[ModelShards]:
    """The models whose outputs the forecast waits for and reads: every one, but the
    backtest twins once the backtest is lost (`stages.backtest_loss`)."""
    return [m for m in manifest.models if not (m.backtest and backtest_lost)]


def _pending_models(
    storage: Storage, manifest: Manifest, complete: str | None, backtest_lost: bool
) -> list[str]:
    """Awaited models whose last transform's output is not complete yet (one `.out` per
    inference shard), other than `complete`, whose outputs the caller has just listed."""
    return [
        m.name
        for m in _awaited(manifest, backtest_lost)
        if m.name != complete and _missing_outputs(storage, manifest, m)
    ]


@dataclass(frozen=True)
class Scores:
    """What the forecast could be scored on. Scores are optional: `problems` says why one
    is missing, and never stops the forecast itself."""

    truth: np.ndarray | None = None  # the uploaded truth, aligned to the series
    truth_etag: str | None = None  # of the truth scored against
    truth_uploaded: bool = False  # also when it could not be used (then see `problems`)
    score: scoring.Score | None = None  # against the truth
    backtest: scoring.Score | None = None
    backtest_forecast: np.ndarray | None = None  # (series, horizon): the last sales days
    problems: tuple[str, ...] = ()


def _scores(
    storage: Storage,
    manifest: Manifest,
    data: M5Data,
    predictions: list[pd.DataFrame],
    values: np.ndarray,
    hierarchy: Hierarchy,
    backtest_lost: str | None,
) -> Scores:
    """Score against the optional `raw/<dataset>/sales_test_evaluation.csv` and on the
    backtest (none when it was lost: `backtest_lost` says why). The truth file is not an
    input of the run (uploading or fixing it starts nothing), so a wrong one must not cost
    the user a finished forecast."""
    problems: list[str] = []
    key = naming.raw_prefix(manifest.dataset) + naming.TRUTH_FILE
    etag = storage.etag(key)
    truth = score = backtest = backtest_forecast = None
    if etag is not None:
        try:
            frame = submission.read_table(naming.TRUTH_FILE, storage.read(key, etag=etag))
            truth, score = submission.score_against_truth(
                data, naming.TRUTH_FILE, frame, values, hierarchy
            )
        except (ValueError, ObjectChangedError, ObjectMissingError) as exc:  # ScoringError...
            truth = None  # nor plotted
            # The reader's own reasons name the file already ("sales_test_evaluation.csv: ...").
            named = str(exc).startswith(naming.TRUTH_FILE)
            problems.append(f"not scored: {exc}" if named else f"not scored against {key}: {exc}")
    if backtest_lost:
        problems.append(f"no backtest score: {backtest_lost}")
    else:
        try:
            backtest, backtest_forecast = _backtest(predictions, data, hierarchy, manifest.horizon)
        except (ScoringError, RunFailedError) as exc:
            reason = exc.reason if isinstance(exc, RunFailedError) else str(exc)
            problems.append(f"no backtest score: {reason}")
    scored_etag = etag if score is not None else None
    return Scores(
        truth, scored_etag, etag is not None, score, backtest, backtest_forecast, tuple(problems)
    )


def _backtest(
    forecasters: list[pd.DataFrame], data: M5Data, hierarchy: Hierarchy, horizon: int
) -> tuple[scoring.Score | None, np.ndarray | None]:
    """Score the predictions the models made for the last `horizon` sales days, if any;
    return the score and those predictions, (series, horizon), for the report to draw.

    A model trained on those days (the recursive model, a direct model with a backtest
    twin) forecasts none of them: the backtest is the other models', the twins'."""
    origin = data.last_day - horizon
    past = [p for p in (p[p["day"] <= data.last_day] for p in forecasters) if not p.empty]
    if not past:
        return None, None
    values = _mean_submission(past, data, origin, horizon).drop(columns="id").to_numpy()
    history = data.sales[:, :origin]
    weights = scoring.dollar_sales(history, data.prices[:, :origin])
    truth = data.sales[:, origin:]
    score = scoring.wrmsse(history, truth, values, hierarchy, weights, costliest=scoring.COSTLIEST)
    return score, values


@dataclass(frozen=True)
class Assembly:
    """What one transform completion (or `Backtest Lost`) did. All but one of a run's
    completions assemble nothing, and a bare None read like an error on the console where
    it meant "a sibling will"."""

    submission: str | None  # the key, when this delivery wrote and announced the forecast
    note: str  # what it did, in words


def assemble_forecast(
    storage: Storage,
    publisher: EventPublisher,
    transform: Mapping[str, Any],
    sagemaker: Any,
    settings: jobs.JobSettings,
) -> Assembly:
    """React to a transform job's final state (`transform`: the event's detail).

    A completed pass of the recursive model, other than its last, starts the next pass
    (`_next_pass`) and assembles nothing. Whatever the job's end, its instances are free:
    the run's transforms that waited for the quota start (`start_waiting_transforms`).

    The submission key comes back when this delivery wrote and announced the forecast;
    otherwise the note says why not: siblings still running, the run failed (this job or
    before), its backtest was lost (a twin's job), or the forecast was written before
    (another delivery announced it, or this one re-sent its lost announcement).
    """
    _, run, output_name = naming.run_and_model_of(transform["TransformOutput"]["S3OutputPath"])
    manifest = Manifest.from_json(storage.read(naming.manifest_key(run)))
    failure = failure_name(storage, run)
    assembly = _on_end(storage, publisher, transform, output_name, sagemaker, settings, manifest,
                       failure)  # fmt: skip
    if assembly.submission is None:
        # The job's instances are free: the run's transforms that waited for them start.
        started = start_waiting_transforms(
            storage, sagemaker, publisher, manifest, settings,
            stage=Stage.ASSEMBLE_FORECAST, failure=failure,
        )  # fmt: skip
        if started:
            note = f"{assembly.note}; started {listed(started)}, which waited for the quota"
            assembly = replace(assembly, note=note)
    return assembly


def _on_end(
    storage: Storage,
    publisher: EventPublisher,
    transform: Mapping[str, Any],
    output_name: str,
    sagemaker: Any,
    settings: jobs.JobSettings,
    manifest: Manifest,
    failure: str,
) -> Assembly:
    """What `assemble_forecast` does for the transform that ended (`output_name`: its
    pass's name, from its output path), before the transforms that waited start."""
    name, run = transform["TransformJobName"], manifest.run_id
    model_name, number = naming.pass_of(output_name)
    status = transform["TransformJobStatus"]
    if status != "Completed":
        # As for a failed training job (publish_model): a direct model still training, or
        # the recursive model's passes, are stopped; a twin's costs the backtest only.
        cost = job_failed(storage, sagemaker, publisher, manifest, transform,
                          kind=Stage.TRANSFORM, model=model_name, failure=failure)  # fmt: skip
        return Assembly(None, f"transform job {name} {status}: {cost}")
    settled = _settled(publisher, run, failure, name)
    if settled:
        return settled
    model = manifest.model(model_name)
    missing = _missing_outputs(storage, manifest, model, number)
    if missing:
        # A completed transform writes one output per input object it found: an inference
        # shard deleted during the run. Without this, the siblings would wait for it forever.
        reason = (
            f"transform job {name} completed without an output for {len(missing)} of its "
            f"{len(model.inference)} inference shards, e.g. {missing[0]} (deleted during "
            "the run?); the forecast would miss their series"
        )
        if model.backtest:  # then only the backtest would: the run goes on without it
            cost = lose_backtest(storage, sagemaker, publisher, manifest, model=model.name,
                                 stage=Stage.ASSEMBLE_FORECAST, reason=reason,
                                 failure=failure)  # fmt: skip
            return Assembly(None, f"transform job {name} left shards without output: {cost}")
        announce_run_failure(
            publisher, {"run_id": run, "dataset": manifest.dataset,
                        "stage": Stage.ASSEMBLE_FORECAST, "job": name, "reason": reason},
            once=failure,
        )  # fmt: skip
        return Assembly(None, f"transform job {name} left shards without output: run failed")
    if number < model.last_pass:
        return _next_pass(
            storage, publisher, sagemaker, settings, manifest, model, number + 1, failure
        )
    lost = lost_backtest(publisher, run)
    return _assemble_if_last(storage, publisher, manifest, failure, lost,
                             f"{model.name} predicted", complete=model.name)  # fmt: skip


def assemble_without_backtest(
    storage: Storage, publisher: EventPublisher, lost: Mapping[str, Any]
) -> Assembly:
    """React to `Backtest Lost` (`lost`: its detail): a twin failed, maybe after every other
    model's transform completed, when no completion is left to assemble. So look once more,
    and assemble if nothing is pending. An event whose loss the run's ledger does not hold
    (sent by someone else) does nothing."""
    run = lost.get("run_id")
    if not isinstance(run, str) or not run:  # not one of m5flow's own: anyone may put events
        logger.warning("a Backtest Lost of no run", extra={"detail": dict(lost)})
        return Assembly(None, "the event names no run: nothing to do")
    why = lost_backtest(publisher, run)
    if why is None:
        logger.warning("no backtest of this run was lost", extra={"run_id": run})
        return Assembly(None, "the run's ledger holds no lost backtest: nothing to do")
    try:
        manifest = Manifest.from_json(storage.read(naming.manifest_key(run)))
    except ObjectMissingError:  # its runs/ expired or deleted since: no run to finish
        logger.warning("the run's manifest is gone", extra={"run_id": run})
        return Assembly(None, "the run's manifest is gone: nothing to do")
    failure = failure_name(storage, run)
    settled = _settled(publisher, run, failure, job="(Backtest Lost)")
    if settled:
        return settled
    return _assemble_if_last(storage, publisher, manifest, failure, why, "backtest lost")


def _settled(publisher: EventPublisher, run: str, failure: str, job: str) -> Assembly | None:
    """What was done instead of assembling, if the run has ended: its forecast announced
    (or being announced), or the run failed. None while it goes on."""
    announcement = publisher.settle(run, FORECAST_READY)
    if announcement == "resent":
        # The forecast was written before its record: only the announcement was lost.
        logger.info("forecast announced by the retry", extra={"run_id": run, "job": job})
        return Assembly(None, "Forecast Ready sent again: its first sending may have been lost")
    if announcement == "announced":
        # A late re-delivery (or a retry that lost the take-over): nothing to redo, even if
        # the run's predictions/ have since been cleared away.
        logger.info("forecast already announced", extra={"run_id": run, "job": job})
        return Assembly(
            None,
            "the forecast was announced, or another delivery is announcing it: nothing to do",
        )
    if publisher.settle(run, failure) != "absent":
        # A sibling's job or an earlier assembly failed the run: no forecast can follow.
        logger.warning("the run has failed; no forecast", extra={"run_id": run, "job": job})
        return Assembly(None, "the run has failed: no forecast")
    return None


def _assemble_if_last(
    storage: Storage,
    publisher: EventPublisher,
    manifest: Manifest,
    failure: str,
    lost: str | None,
    done: str,
    complete: str | None = None,
) -> Assembly:
    """Assemble, write and announce the forecast if no model is pending but `complete`,
    whose outputs the caller has just listed (`lost`: why the backtest was lost, if it was;
    `done`: what the caller's event did, for the note when siblings are still running)."""
    run = manifest.run_id
    pending = _pending_models(storage, manifest, complete, lost is not None)
    if pending:
        logger.info(
            "waiting for sibling transforms", extra={"run_id": run, "predictions_missing": pending}
        )
        waiting = [_waiting_for(manifest.model(name)) for name in pending]
        return Assembly(None, f"{done}; waiting for {', '.join(waiting)}")

    try:
        data, predictions, frame, closed_dates = _read_forecast(storage, manifest, bool(lost))
    except (RunFailedError, ObjectChangedError, ObjectMissingError) as exc:
        return _failed(publisher, manifest, exc, failure)
    values = frame.drop(columns="id").to_numpy()
    hierarchy = Hierarchy.from_data(data)
    scores = _scores(storage, manifest, data, predictions, values, hierarchy, lost)
    for problem in scores.problems:
        logger.warning("forecast not scored", extra={"run_id": run, "reason": problem})
    page = report.render_report(
        history=data.sales,
        forecast=values,
        hierarchy=hierarchy,
        ids=data.ids,
        facts=_facts(manifest, data, scores, closed_dates, lost is not None),
        truth=scores.truth,
        truth_uploaded=scores.truth_uploaded,
        score=scores.score,
        backtest=scores.backtest,
        backtest_forecast=scores.backtest_forecast,
        backtest_by=_backtest_by(manifest) or "the same method",
        optimistic=report.EARLY_STOPPED if _early_stopped(manifest) else None,
        dates=pd.to_datetime(data.calendar["date"]).to_numpy(),
    )
    metrics = _metrics(manifest, data, values, scores, closed_dates, lost is not None)
    prefix = naming.forecast_prefix(run)
    # Concurrent deliveries write identical bytes; the announcement below is sent once.
    storage.write(prefix + naming.METRICS_FILE, json.dumps(metrics, indent=1).encode())
    storage.write(prefix + naming.REPORT_FILE, page.encode())
    storage.write(prefix + naming.SUBMISSION_FILE, forecast.to_csv(frame))
    announced = publisher.publish(
        "Forecast Ready",
        {
            "run_id": run,
            "dataset": manifest.dataset,
            "submission": storage.uri(prefix + naming.SUBMISSION_FILE),
            "metrics": storage.uri(prefix + naming.METRICS_FILE),
            "report": storage.uri(prefix + naming.REPORT_FILE),
            "headline": _headline(manifest, len(frame), scores),
        },
        once=FORECAST_READY,
    )
    if not announced:  # two completions found every output at once: the other announced it
        return Assembly(None, "wrote the forecast again; another delivery announced it")
    submission = prefix + naming.SUBMISSION_FILE
    return Assembly(submission, f"wrote {submission}")


def _closed(data: M5Data, first_day: int, horizon: int) -> np.ndarray:
    """The horizon days from `first_day` that fall on a date the stores close on, judged
    from the sales before it (`forecast.closed_days`)."""
    totals = data.sales[:, : first_day - 1].sum(axis=0)
    dates = pd.to_datetime(data.calendar["date"]).to_numpy()
    return forecast.closed_days(totals, dates, first_day, horizon)


def _read_inputs(storage: Storage, manifest: Manifest) -> M5Data:
    """The run's inputs, the versions it was named after and sharded from.

    Raises
    ------
    RunFailedError
        When an input was deleted.
    ObjectChangedError
        When an input was replaced after the run began: a replaced file is another run's.
    """
    inputs = manifest.inputs
    try:
        payloads = {
            name: storage.read(inputs[name]["key"], etag=inputs[name]["etag"])
            for name in schema.INPUT_FILES
        }
    except ObjectMissingError as exc:
        raise RunFailedError(
            Stage.ASSEMBLE_FORECAST,
            f"{exc}: an input was deleted while the run trained, and the forecast is "
            "assembled from its rows; to forecast these files, upload them under a new "
            f"{naming.RAW_PREFIX}<dataset>/ (the same files again would name this failed run)",
        ) from None
    return schema.parse_inputs(payloads)


def _forecasters(storage: Storage, manifest: Manifest, backtest_lost: bool) -> list[pd.DataFrame]:
    """The predictions of each forecaster: the direct models and their backtest twins
    together (each forecasts its own horizon days, after the last sales day or, a twin, up
    to it; none once the backtest is lost), then each recursive model's last pass (every
    day)."""
    models = _awaited(manifest, backtest_lost)
    direct = [o for m in models if not m.passes for o in _pass_outputs(manifest, m, 0)]
    outputs = [direct] if direct else []
    outputs += [_pass_outputs(manifest, m, m.last_pass) for m in models if m.passes]
    return [
        forecast.read_predictions((key, storage.read(key), rows) for key, rows in each)
        for each in outputs
    ]


def _mean_submission(
    forecasters: list[pd.DataFrame],
    data: M5Data,
    origin: int,
    horizon: int,
    closed: np.ndarray | None = None,
) -> pd.DataFrame:
    """The forecasters' mean submission for the `horizon` days after `origin`; `closed`:
    its closed days, when the caller has them (`_closed`)."""
    never_sold = data.sales[:, :origin].max(axis=1, initial=0) == 0
    closed = _closed(data, origin + 1, horizon) if closed is None else closed
    frames = [
        forecast.submission(
            predictions[(predictions["day"] > origin) & (predictions["day"] <= origin + horizon)],
            data.ids,
            origin + 1,
            horizon,
            never_sold=never_sold,
            closed=closed,
        )
        for predictions in forecasters
    ]
    return forecast.mean_of(frames)


def _read_forecast(
    storage: Storage, manifest: Manifest, backtest_lost: bool
) -> tuple[M5Data, list[pd.DataFrame], pd.DataFrame, list[str]]:
    """The run's inputs, every forecaster's predictions (the twins' not, once the backtest
    is lost), the submission frame (`id,F1..`), and the dates of the horizon days forecast
    0 as closed days.

    Raises
    ------
    RunFailedError
        When the predictions cannot make a submission (missing, repeated, not finite), or
        an input was deleted.
    ObjectChangedError
        When an input was replaced after the run began (`_read_inputs`).
    """
    data = _read_inputs(storage, manifest)
    forecasters = _forecasters(storage, manifest, backtest_lost)
    closed = _closed(data, data.last_day + 1, manifest.horizon)
    frame = _mean_submission(forecasters, data, data.last_day, manifest.horizon, closed)
    dates = data.calendar["date"].to_numpy()[data.last_day : data.last_day + manifest.horizon]
    return data, forecasters, frame, [str(date) for date in dates[closed]]


def _next_pass(
    storage: Storage,
    publisher: EventPublisher,
    sagemaker: Any,
    settings: jobs.JobSettings,
    manifest: Manifest,
    model: ModelShards,
    number: int,
    failure: str,
) -> Assembly:
    """Write pass `number` of the recursive model's inference shards, reading pass
    `number - 1`'s forecast as the days ahead (m5flow.recursive), and start its transform.

    Every delivery writes the same bytes and asks for the same job; "already exists" is done.
    """
    try:
        _write_pass_shards(storage, manifest, model, number)
    except (RunFailedError, ObjectChangedError, ObjectMissingError) as exc:
        return _failed(publisher, manifest, exc, failure)
    job = naming.transform_job_name(manifest.run_id, model.name, number)
    started = start_transform(
        storage, sagemaker, publisher, manifest, model, settings,
        number=number, stage=Stage.ASSEMBLE_FORECAST, failure=failure,
    )  # fmt: skip
    if started == "refused":
        return Assembly(None, f"transform job {job} refused: run failed")
    if started == "stopped":
        return Assembly(None, f"the run failed meanwhile: transform job {job} stopped")
    if started == "waiting":
        return Assembly(None, f"transform job {job} waits for the quota")
    announce_transform(publisher, manifest, model, number)
    return Assembly(None, f"{model.name} pass {number + 1} of {model.passes} started: {job}")


def _write_pass_shards(
    storage: Storage, manifest: Manifest, model: ModelShards, number: int
) -> None:
    """Write the inference shards of the recursive model's pass `number`: each group's
    series, as in pass `number - 1`'s output of the same name, reading that pass's forecast
    (as a submission: closed days and never-sold series 0) as the days after each origin.

    Raises
    ------
    RunFailedError, ObjectChangedError, ObjectMissingError
        As `_read_inputs`, or when the pass before's outputs cannot be read.
    """
    data = _read_inputs(storage, manifest)
    by_group = [
        forecast.read_predictions([(key, storage.read(key), rows)])
        for key, rows in _pass_outputs(manifest, model, number - 1)
    ]
    before = pd.concat(by_group, ignore_index=True)
    guesses = [
        (origin, _mean_submission([before], data, origin, HORIZON).drop(columns="id").to_numpy())
        for origin in recursive.origins(data, every_day=model.trees is not None)
    ]
    config = recursive.feature_config()
    facts = series_facts(data, config)
    row_of = {series: row for row, series in enumerate(data.ids)}
    for shard, group in zip(_pass_inputs(manifest, model, number), by_group, strict=True):
        rows = np.array([row_of[series] for series in pd.unique(group["id"])], dtype=np.int64)
        blocks = recursive.pass_blocks(data, facts, rows, guesses, config)
        storage.write(shard.key, encode_inference(blocks, data.ids, model.feature_names))


def _failed(
    publisher: EventPublisher,
    manifest: Manifest,
    exc: RunFailedError | ObjectChangedError | ObjectMissingError,
    failure: str,
) -> Assembly:
    """Announce that the forecast cannot be made, with the reason `exc` gives."""
    reason = exc.reason if isinstance(exc, RunFailedError) else str(exc)
    stage = exc.stage if isinstance(exc, RunFailedError) else Stage.ASSEMBLE_FORECAST
    logger.error(
        "forecast cannot be assembled", extra={"run_id": manifest.run_id, "reason": reason}
    )
    announce_run_failure(
        publisher,
        {"run_id": manifest.run_id, "dataset": manifest.dataset, "stage": stage, "reason": reason},
        once=failure,
    )
    return Assembly(None, "the forecast cannot be assembled: run failed")


def _scored_on(scores: Scores) -> str:
    return "truth" if scores.score else ("backtest" if scores.backtest else "nothing")


def _metrics(
    manifest: Manifest,
    data: M5Data,
    values: np.ndarray,
    scores: Scores,
    closed_dates: list[str],
    backtest_lost: bool,
) -> dict[str, object]:
    """metrics.json: what was forecast and how it scored, or why it was not scored.
    `models` are the models whose forecasts it read: a lost backtest's twins are apart."""
    score, backtest = scores.score, scores.backtest
    metrics: dict[str, object] = {
        "run_id": manifest.run_id,
        "dataset": manifest.dataset,
        "series": len(data.ids),
        "first_day": manifest.last_day + 1,
        "horizon": manifest.horizon,
        "models": [m.name for m in _awaited(manifest, backtest_lost)],
        **({"models_lost": _lost_twins(manifest)} if backtest_lost else {}),
        **({"forecast_is": mix} if (mix := _mix(manifest)) else {}),
        "scored_on": _scored_on(scores),
        "wrmsse": score.as_dict() if score else None,
        "backtest_wrmsse": backtest.as_dict() if backtest else None,
        "forecast_mean_daily_total": float(values.sum(axis=0).mean()),
    }
    if scores.truth_etag:
        metrics["truth_etag"] = scores.truth_etag
    if backtest:
        metrics["backtest_days"] = f"d_{data.last_day - manifest.horizon + 1}..d_{data.last_day}"
        by = _backtest_by(manifest)
        if _early_stopped(manifest):
            metrics["backtest_note"] = BACKTEST_NOTE + (f"; forecast by {by}" if by else "")
        else:  # the twins train a fixed count of trees: nothing watched the backtest's days
            metrics["backtest_note"] = (
                f"the last sales days, forecast from the days before them by {by}"
            )
    if scores.problems:
        metrics["score_problems"] = list(scores.problems)
    if closed_dates:
        metrics["closed_days"] = closed_dates  # forecast 0: the stores closed on them every year
    never_sold = data.ids[data.never_sold]
    if len(never_sold):
        metrics["never_sold"] = {"series": len(never_sold), "ids": never_sold[:10].tolist()}
    return metrics


def _facts(
    manifest: Manifest,
    data: M5Data,
    scores: Scores,
    closed_dates: list[str],
    backtest_lost: bool,
) -> dict[str, object]:
    """The report's table of the run."""
    lost = set(_lost_twins(manifest)) if backtest_lost else set()
    facts: dict[str, object] = {
        "run id": manifest.run_id,
        "dataset": manifest.dataset,
        "models": [_described(m) + (": lost" if m.name in lost else "") for m in manifest.models],
    }
    if mix := _mix(manifest):
        facts["forecast"] = mix
    never_sold = data.ids[data.never_sold]
    if len(never_sold):
        facts["forecast 0: never sold"] = f"{len(never_sold):,} series ({listed(never_sold, 3)})"
    if closed_dates:
        facts["forecast 0: closed days"] = [
            f"{date} (the stores closed on it in every earlier year)" for date in closed_dates
        ]
    if manifest.notices:
        facts["notices"] = list(manifest.notices)
    if scores.problems:  # under their key, without its words again
        facts[report.NOT_SCORED] = [p.removeprefix("not scored: ") for p in scores.problems]
    if manifest.hyperparameters:
        facts["hyperparameters from m5flow.json"] = [
            f"{name}={'(stack value dropped)' if value is None else value}"
            for name, value in manifest.hyperparameters.items()
        ]
    return facts


def _lost_twins(manifest: Manifest) -> list[str]:
    """The backtest twins, which a lost backtest leaves unread (`_awaited`)."""
    return [m.name for m in manifest.models if m.backtest]


def _described(model: ModelShards) -> str:
    days = f"days {model.horizon_days[0]}-{model.horizon_days[1]}"
    if model.backtest:
        return f"{model.name} ({days} of the backtest)"
    if not model.passes:
        return f"{model.name} ({days})"
    return f"{model.name} ({days}, recursive: {_passes(model.passes)})"


def _passes(count: int) -> str:
    return f"{count} pass{'es' if count != 1 else ''}"


def _waiting_for(model: ModelShards) -> str:
    """A pending model, as the console says it: a recursive one by its last pass."""
    if not model.passes:
        return model.name
    return f"{model.name} (recursive: its pass {model.passes} of {model.passes})"


def _mix(manifest: Manifest) -> str | None:
    """How the forecast is made of the models' forecasts, when not one forecast alone."""
    recursive_models = [m.name for m in manifest.models if m.passes]
    direct = _forecasting_direct(manifest)
    if not recursive_models or not direct:
        return None
    return f"the mean of {', '.join(recursive_models)}'s and {', '.join(direct)}'s"


def _forecasting_direct(manifest: Manifest) -> list[str]:
    """The direct models that forecast the days after the last sales day (not the twins)."""
    return [m.name for m in manifest.models if not m.passes and not m.backtest]


def _backtest_models(manifest: Manifest) -> list[str] | None:
    """The models that forecast the backtest, when not every model did: the direct models'
    backtest twins, or else the early-stopped models. One trained on every day (the
    recursive model, a direct model with a twin) has no honest backtest and forecasts
    none of its days."""
    models = manifest.models
    scoring_models = [m.name for m in models if m.backtest or m.trees is None]
    return None if len(scoring_models) == len(models) else scoring_models


def _early_stopped(manifest: Manifest) -> bool:
    """Whether early stopping watched the backtest's days (no backtest twins)."""
    return not any(m.backtest for m in manifest.models)


def _backtest_by(manifest: Manifest) -> str | None:
    """`_backtest_models` in words, for metrics.json and the report."""
    scoring_models = _backtest_models(manifest)
    if scoring_models is None:
        return None
    listed_models = ", ".join(scoring_models)
    if _early_stopped(manifest):
        others = ", ".join(m.name for m in manifest.models if m.name not in scoring_models)
        return f"the direct models alone ({listed_models}; {others} trained on those days)"
    twinned = ", ".join(_forecasting_direct(manifest))
    return (
        f"the direct models' backtest twins ({listed_models}: trained as {twinned}, on the "
        "days before these only)"
    )


def _headline(manifest: Manifest, series: int, scores: Scores) -> dict[str, object]:
    """The few numbers `Forecast Ready` carries, for a subscriber who reads no file."""
    score, backtest = scores.score, scores.backtest
    headline: dict[str, object] = {"series": series, "scored_on": _scored_on(scores)}
    if score:
        headline |= {"wrmsse": round(score.wrmsse, 4), "level1_rmsse": round(score.levels[1], 4)}
    if backtest:
        headline |= {"backtest_wrmsse": round(backtest.wrmsse, 4)}
        if models := _backtest_models(manifest):
            headline["backtest_models"] = models
    shown = score or backtest
    if shown and shown.unscored:
        headline["unscored_series"] = len(shown.unscored)
    if scores.problems:
        headline["score_problems"] = list(scores.problems)
    return headline
