"""Assemble step: a transform finished; the last of a run's transforms writes the forecast."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow.csv as pacsv
from aws_lambda_powertools import Logger

from m5flow import forecast, jobs, naming, schema
from m5flow.exceptions import RunFailedError
from m5flow.notifications import EventPublisher
from m5flow.shards import Manifest, channel_prefix
from m5flow.storage import Storage

logger = Logger(child=True)


def _output_key(manifest: Manifest, model: str, input_key: str) -> str:
    relative = input_key.removeprefix(channel_prefix(manifest.run_id, "inference", model))
    return f"{channel_prefix(manifest.run_id, 'predictions', model)}{relative}.out"


def _pending_models(storage: Storage, manifest: Manifest) -> list[str]:
    """Models whose transform output is not complete yet (one `.out` per inference shard)."""
    pending = []
    for model in manifest.models:
        have = set(storage.list(channel_prefix(manifest.run_id, "predictions", model.name)))
        if any(_output_key(manifest, model.name, s.key) not in have for s in model.inference):
            pending.append(model.name)
    return pending


def assemble_forecast(
    storage: Storage, publisher: EventPublisher, transform: Mapping[str, Any]
) -> str | None:
    """React to a transform job's final state (`transform`: the event's detail).

    Returns the submission key when this delivery announced the forecast; None when siblings
    are still running, the job failed, or another delivery already announced it.
    """
    name = transform["TransformJobName"]
    _, run, _ = jobs.run_and_model_of(transform["TransformOutput"]["S3OutputPath"])
    manifest = Manifest.from_json(storage.read(naming.manifest_key(run)))
    status = transform["TransformJobStatus"]
    if status != "Completed":
        reason = transform.get("FailureReason") or f"the transform job was {status.lower()}"
        publisher.publish(
            "Run Failed",
            {
                "run_id": run,
                "dataset": manifest.dataset,
                "stage": "transform",
                "job": name,
                "status": status,
                "reason": f"transform job {name} {status}: {reason}",
            },
            once=f"run-failed-{name}",
        )
        return None
    pending = _pending_models(storage, manifest)
    if pending:
        logger.info("waiting for sibling transforms", extra={"run_id": run, "pending": pending})
        return None

    sales_key = manifest.inputs[schema.SALES_FILE]["key"]
    ids = (
        pacsv.read_csv(
            io.BytesIO(storage.read(sales_key)),
            convert_options=pacsv.ConvertOptions(include_columns=["id"]),
        )
        .column("id")
        .to_numpy(zero_copy_only=False)
        .astype(str)
    )
    bodies = [
        storage.read(_output_key(manifest, model.name, shard.key))
        for model in manifest.models
        for shard in model.inference
    ]
    try:
        frame = forecast.submission(
            forecast.read_predictions(bodies), ids, manifest.last_day + 1, manifest.horizon
        )
    except RunFailedError as exc:
        publisher.publish(
            "Run Failed",
            {"run_id": run, "dataset": manifest.dataset, "stage": exc.stage, "reason": exc.reason},
            once="run-failed-assemble",
        )
        return None
    prefix = f"{naming.run_prefix(run)}forecast/"
    values = frame.drop(columns="id").to_numpy()
    metrics = {
        "run_id": run,
        "dataset": manifest.dataset,
        "series": len(frame),
        "first_day": manifest.last_day + 1,
        "horizon": manifest.horizon,
        "forecast_total": float(values.sum()),
        "forecast_mean_daily_total": float(values.sum(axis=0).mean()),
        "zero_share": float(np.mean(values < 0.5)),
    }
    # Concurrent deliveries write identical bytes; the announcement below is sent once.
    storage.write(prefix + "metrics.json", json.dumps(metrics, indent=1).encode())
    storage.write(prefix + "submission.csv", forecast.to_csv(frame))
    announced = publisher.publish(
        "Forecast Ready",
        {
            "run_id": run,
            "dataset": manifest.dataset,
            "submission": storage.uri(prefix + "submission.csv"),
            "metrics": storage.uri(prefix + "metrics.json"),
            "headline": {k: metrics[k] for k in ("series", "forecast_mean_daily_total")},
        },
        once="forecast-ready",
    )
    return prefix + "submission.csv" if announced else None
