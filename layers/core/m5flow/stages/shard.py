"""Shard step: a raw input arrived; once all three are there, validate and write shards."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from aws_lambda_powertools import Logger

from m5flow import naming, schema
from m5flow.csvinput import problem
from m5flow.exceptions import InputRejectedError
from m5flow.manifest import Manifest
from m5flow.notifications import EventPublisher, Stage
from m5flow.overrides import DatasetOverrides, parse_overrides
from m5flow.schema import M5Data
from m5flow.shards import ShardConfig, nothing_to_train, write_shards
from m5flow.stages.failure import failure_name
from m5flow.storage import (
    AlreadyExistsError,
    ObjectChangedError,
    ObjectHead,
    ObjectMissingError,
    Storage,
)

logger = Logger(child=True)
# Names of the shard step's refusals in a run's ledger, each followed by its upload's name.
_REFUSED, _AGAIN = "input-rejected", "uploaded-again"


class SettingsChangedError(ObjectChangedError):
    """m5flow.json was replaced or deleted after its HEAD: unlike an input's, its upload
    starts no run, so the step starts again with what is there now."""


@dataclass(frozen=True)
class ShardOutcome:
    """What the step did: `status` is one of started, waiting, duplicate (the run was
    made before), rejected (refused now, and announced), refused (refused before: not
    announced again), ignored, superseded (an input was replaced while it was read)."""

    status: str
    dataset: str | None = None
    run_id: str | None = None


def shard_dataset(
    storage: Storage,
    publisher: EventPublisher,
    key: str,
    config: ShardConfig | None = None,
) -> ShardOutcome:
    """Handle the arrival of raw object `key`: shard its dataset if all inputs are present.

    The last of the three inputs to arrive does the work; earlier arrivals find an input
    missing and wait. A re-delivered or concurrent event finds the run's manifest already
    written (or loses the conditional write of it), and the announcement is sent once.
    """
    dataset = naming.dataset_of(key)
    if dataset is None or not naming.is_input(key):
        problem = naming.misplaced_input(key)
        if problem is None or not _explains_a_wait(storage, dataset, key):
            logger.info("not an input that starts a run, ignored", extra={"key": key})
            return ShardOutcome("ignored", dataset)
        logger.warning("input rejected", extra={"key": key, "reasons": [problem]})
        detail = {"run_id": None, "dataset": dataset, "stage": Stage.SHARD, "reason": problem,
                  "reasons": [problem], "key": key}  # fmt: skip
        publisher.publish("Input Rejected", detail, once=None)  # of no run: nothing to record
        return ShardOutcome("rejected", dataset)
    prefix = naming.raw_prefix(dataset)
    run, present, absent = naming.dataset_run(storage, prefix, dataset)
    if run is None:
        logger.info("waiting for the other inputs", extra={"dataset": dataset, "absent": absent})
        return ShardOutcome("waiting", dataset)
    versions = {name: present[name].version for name in schema.INPUT_FILES}
    if storage.etag(naming.manifest_key(run)) is not None:
        # Sharded before: a re-delivery, a retry after a crash before the announcement, or
        # the same files uploaded again.
        manifest = Manifest.from_json(storage.read(naming.manifest_key(run)))
        announced = _announce_run_started(storage, publisher, manifest)
        if not announced and _refuse_a_second_upload(storage, publisher, manifest, versions):
            return ShardOutcome("rejected", dataset, run)
        return ShardOutcome("started" if announced else "duplicate", dataset, run)

    inputs = input_records(prefix, present)
    refused = [_versions_of(r["detail"]) for r in publisher.recorded(run, f"{_REFUSED}-")]
    if refused and all(versions.values()) and _compared(versions, refused) != "new":
        # This set was refused before: a re-delivery, or part of it uploaded again. A
        # refusal whose sender was killed before PutEvents is sent now (the ledger's promise).
        resent = publisher.settle(run, f"{_REFUSED}-{_upload_of(versions)}") == "resent"
        logger.info("refused before; not read again", extra={"run_id": run})
        return ShardOutcome("rejected" if resent else "refused", dataset, run)
    try:
        data, overrides = read_inputs(storage, prefix, present, config)
    except SettingsChangedError:
        # Only m5flow.json was replaced or deleted, and its own upload starts nothing: this
        # event starts the run of the same inputs with the settings there now.
        logger.info("the settings changed while reading", extra={"run_id": run})
        return shard_dataset(storage, publisher, key, config)
    except ObjectChangedError as exc:
        # This set of inputs is gone; the event of the upload that replaced it starts its run.
        logger.info("an input was replaced while reading", extra={"run_id": run, "why": str(exc)})
        return ShardOutcome("superseded", dataset, run)
    except InputRejectedError as exc:
        logger.warning("input rejected", extra={"run_id": run, "reasons": exc.reasons})
        announced = publisher.publish(
            "Input Rejected",
            {
                "run_id": run,
                "dataset": dataset,
                "stage": Stage.SHARD,
                "reason": "; ".join(exc.reasons),
                "reasons": exc.reasons,
                "inputs": inputs,
            },
            # Once per upload: the same files uploaded again are refused again, out loud.
            once=f"{_REFUSED}-{_upload_of(versions)}",
        )
        return ShardOutcome("rejected" if announced else "refused", dataset, run)

    manifest = write_run_shards(storage, run, dataset, inputs, data, overrides, config)
    try:
        storage.write(naming.manifest_key(run), manifest.to_json(), if_absent=True)
    except AlreadyExistsError:
        logger.info("a concurrent delivery wrote the manifest first", extra={"run_id": run})
    announced = _announce_run_started(storage, publisher, manifest)
    return ShardOutcome("started" if announced else "duplicate", dataset, run)


def input_records(prefix: str, present: Mapping[str, ObjectHead]) -> dict[str, dict[str, str]]:
    """What a manifest records of the files a run was made from: key, ETag and, on a
    versioned bucket, the version id (which tells a second upload from a re-delivery)."""
    return {
        name: {"key": prefix + name, "etag": head.etag}
        | ({"version": head.version} if head.version else {})
        for name, head in present.items()
    }


def _refuse_a_second_upload(
    storage: Storage,
    publisher: EventPublisher,
    manifest: Manifest,
    versions: Mapping[str, str | None],
) -> bool:
    """Say, once per upload, that the same files uploaded again start nothing: the same
    files make the same run. True when this call sent the refusal: all three inputs are
    versions uploaded since the run (and since any second upload already refused), or a
    re-delivery found the refusal's sender killed before it sent. False for a re-delivery
    of the run's own uploads, or while a second upload is only part way (one file re-sent
    by a sync tool is no request to run again).

    Without versions (an unversioned bucket, or a run recorded before m5flow kept them) a
    second upload cannot be told from a re-delivery: only a run that failed is logged, as the
    likeliest reason to upload its files again.
    """
    run = manifest.run_id
    failed = publisher.settle(run, failure_name(storage, run)) != "absent"
    recorded = _versions_of({"inputs": manifest.inputs})
    again = (
        f"these files already made run {run}{', which failed' if failed else ''}; the same "
        "files make the same run, so uploading them again starts nothing: to run them again, "
        f"upload them under a new {naming.RAW_PREFIX}<dataset>/ (or change its "
        f"{naming.OVERRIDES_FILE})"
    )
    if not (all(versions.values()) and all(recorded.values())):
        if failed:
            logger.warning(again, extra={"run_id": run, "dataset": manifest.dataset})
        return False
    again_before = publisher.recorded(run, f"{_AGAIN}-")
    earlier = [recorded, *(_versions_of(r["detail"]) for r in again_before)]
    verdict = _compared(versions, earlier)
    if verdict == "seen" and versions != recorded:  # its refusal's sender may have died
        return publisher.settle(run, f"{_AGAIN}-{_upload_of(versions)}") == "resent"
    if verdict != "new":
        if verdict == "partial":
            logger.info("part of a second upload of the run's files", extra={"run_id": run})
        return False
    logger.warning("input rejected", extra={"run_id": run, "reasons": [again]})
    inputs = {name: {**manifest.inputs.get(name, {}), "version": version}
              for name, version in versions.items()}  # fmt: skip
    detail = {"run_id": run, "dataset": manifest.dataset, "stage": Stage.SHARD,
              "reason": again, "reasons": [again], "inputs": inputs}  # fmt: skip
    publisher.publish("Input Rejected", detail, once=f"{_AGAIN}-{_upload_of(versions)}")
    return True


def _versions_of(announced: Mapping[str, Any]) -> dict[str, str | None]:
    """The input versions a manifest or an announcement's detail records (`inputs`)."""
    inputs = announced.get("inputs") or {}
    return {name: (inputs.get(name) or {}).get("version") for name in schema.INPUT_FILES}


def _compared(
    versions: Mapping[str, str | None], earlier: list[dict[str, str | None]]
) -> Literal["seen", "new", "partial"]:
    """How a set of input versions stands to sets acted on before: one of them (a
    re-delivery), new in every file against each (a whole upload since), or in between (an
    upload under way, or one file sent again)."""
    if any(dict(versions) == seen for seen in earlier):
        return "seen"
    if all(all(versions[n] != seen.get(n) for n in versions) for seen in earlier):
        return "new"
    return "partial"


def _upload_of(versions: Mapping[str, str | None]) -> str:
    """A short name for one set of uploaded versions ("unversioned" without them): the
    events of one upload of the three files find the same set, a second upload another."""
    if not all(versions.values()):
        return "unversioned"
    return hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:16]


def _explains_a_wait(storage: Storage, dataset: str | None, key: str) -> bool:
    """Whether a file that is no input leaves its user waiting for a run: a CSV outside any
    dataset's folder, or a file that stands in for an input the dataset lacks
    (`naming.stands_for`: Kaggle's first-stage sales file or archive, an input's name in
    other letters or compressed). Other files beside the inputs (the rest of a synced Kaggle
    folder, such as sample_submission.csv) are ignored without a word: the run goes on
    without them."""
    if dataset is None:
        return True
    stands_for = naming.stands_for(key.rsplit("/", 1)[-1])
    if stands_for is None:
        return False
    # The input itself may still be on its way: `aws s3 sync` of a Kaggle folder uploads
    # the first-stage and final sales files side by side, in parts, and either may land first.
    missing = naming.raw_prefix(dataset) + stands_for
    if storage.etag(missing) is not None:
        return False
    if storage.uploading(missing):
        # Abandoned uploads count too, until the bucket's lifecycle rule aborts them.
        logger.info("its input is still being uploaded", extra={"key": key, "input": missing})
        return False
    return True


def read_inputs(
    storage: Storage,
    prefix: str,
    present: Mapping[str, ObjectHead],
    config: ShardConfig | None = None,
) -> tuple[M5Data, DatasetOverrides]:
    """Parse the three inputs and the dataset's settings, the versions `present` names
    (ObjectChangedError if one was replaced since), and check that the run they make has
    something to train on; one rejection names every problem."""
    # Sized before any is read: a file far past the limit (a wrong one under an input's
    # name) would take the function's memory before the limit could be checked on its bytes.
    limit = schema.MAX_INPUT_BYTES
    too_large = [
        problem(name, "size", f"{present[name].size:,} bytes", f"at most {limit:,} bytes")
        for name in schema.INPUT_FILES
        if present[name].size > limit
    ]
    if too_large:
        raise InputRejectedError(too_large)
    reasons: list[str] = []
    overrides = DatasetOverrides()
    if naming.OVERRIDES_FILE in present:
        settings = prefix + naming.OVERRIDES_FILE
        try:
            etag = present[naming.OVERRIDES_FILE].etag
            overrides = parse_overrides(storage.read(settings, etag=etag))
        except (ObjectChangedError, ObjectMissingError) as exc:  # replaced, or deleted
            raise SettingsChangedError(str(exc)) from None
        except InputRejectedError as exc:
            reasons += exc.reasons
    try:
        data = schema.parse_inputs(
            {
                name: storage.read(prefix + name, etag=present[name].etag)
                for name in schema.INPUT_FILES
            }
        )
    except InputRejectedError as exc:
        reasons += exc.reasons
    else:
        reasons += nothing_to_train(data, overrides.shard_config(config))
    if reasons:
        raise InputRejectedError(reasons)
    return data, overrides


def write_run_shards(
    storage: Storage,
    run: str,
    dataset: str,
    inputs: dict[str, dict[str, str]],
    data: M5Data,
    overrides: DatasetOverrides,
    config: ShardConfig | None,
) -> Manifest:
    """Write the run's shards, with the dataset's settings over the stack's; return the
    manifest to write last (with the hyperparameters the training jobs will apply)."""
    manifest = write_shards(
        data, storage, run, dataset, inputs, shard_config=overrides.shard_config(config)
    )
    return replace(manifest, hyperparameters=overrides.hyperparameters)


def _announce_run_started(storage: Storage, publisher: EventPublisher, manifest: Manifest) -> bool:
    models = manifest.models
    return publisher.publish(
        "Run Started",
        {
            "run_id": manifest.run_id,
            "dataset": manifest.dataset,
            "series": manifest.series,
            "last_day": manifest.last_day,
            "models": [m.name for m in models],
            "shards": sum(len(m.train) + len(m.validation) + len(m.inference) for m in models),
            "missing_price_weeks": manifest.missing_price_weeks,
            "notices": manifest.notices,
            "hyperparameter_overrides": manifest.hyperparameters,
            "manifest": storage.uri(naming.manifest_key(manifest.run_id)),
        },
        once="run-started",
    )
