"""Running a Batch Transform job with the built-in XGBoost 1.7-1 inference container.

Two halves, as on AWS:

* the platform: list the input objects, split each into records (``SplitType``),
  pack mini-batches (``BatchStrategy``, ``MaxPayloadInMB``: a batch never exceeds
  it, a single larger record fails the job), apply ``DataProcessing``
  (``InputFilter`` -> invoke -> ``JoinSource``: input columns then prediction ->
  ``OutputFilter``, with CSV JSONPath semantics from ``jsonpath.py``) and write
  ``<S3OutputPath>/<key relative to the input prefix>.out``.  Outputs are uploaded
  only when the job was not stopped, and only for objects that fully succeeded;
  any failed object fails the job.
* the container's ``/invocations`` (``algorithm_mode/serve.py``, ``serve_utils.py``,
  ``encoder.py`` of aws/sagemaker-xgboost-container 1.7-1): CSV parsed with a
  sniffed delimiter, empty fields as NaN, rows of unequal length or non-numbers
  refused (HTTP 415), prediction errors HTTP 400, bodies over 6 MiB refused (413),
  and in batch mode one prediction per line.

Prediction runs in the job thread with one XGBoost thread, as the container sets.
The model is loaded from the model's ``ModelDataUrl`` with ``Booster.load_model``
only: unlike the container, which tries ``pickle`` first, nothing is unpickled.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m5flow_local.sagemaker import s3io
from m5flow_local.sagemaker.algorithm_data import CSV, get_content_type
from m5flow_local.sagemaker.exceptions import UserError, ValidationError
from m5flow_local.sagemaker.jsonpath import CsvPath, JsonPathError, parse

if TYPE_CHECKING:
    from m5flow_local.sagemaker.models import SageMakerBackend
    from m5flow_local.sagemaker.resources import Model, TransformJob

LOG = logging.getLogger(__name__)
MB = 1024 * 1024
DEFAULT_MAX_PAYLOAD_MB = 6
CONTAINER_MAX_CONTENT_LENGTH = 6291456  # serve.py: MAX_CONTENT_LENGTH default
SUPPORTED_ACCEPTS = (
    "application/json",
    "application/jsonlines",
    "application/x-recordio-protobuf",
    "text/csv",
)


class InvocationError(Exception):
    """Raised when the container answers an invocation with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class _ObjectFailedError(Exception):
    """Raised when one input object cannot be transformed (the job will fail)."""


def validate_request(params: dict[str, Any], model: Model, region: str) -> None:
    """Checks CreateTransformJob makes before accepting a job.

    Raises
    ------
    ValidationError
        No input objects (AWS's message), limits on ``MaxPayloadInMB``, a model
        without ``ModelDataUrl``, unsupported data sources or JSONPath filters.
    """
    container = model.container()
    if not container.get("ModelDataUrl"):
        raise ValidationError(f"Model {model.name} has no ModelDataUrl to load.")
    payload = params.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB)
    if payload > 100:
        raise ValidationError("MaxPayloadInMB must not be greater than 100 MB.")
    if params.get("MaxConcurrentTransforms", 1) * payload > 100:
        raise ValidationError("MaxConcurrentTransforms * MaxPayloadInMB must not exceed 100 MB.")
    tinput = params["TransformInput"]
    src = tinput["DataSource"]["S3DataSource"]
    if src.get("S3DataType", "S3Prefix") != "S3Prefix":
        raise ValidationError("The local SageMaker supports S3DataType S3Prefix only.")
    if tinput.get("SplitType", "None") not in ("None", "Line"):
        raise ValidationError("The local SageMaker supports SplitType None and Line only.")
    processing = params.get("DataProcessing") or {}
    if tinput.get("ContentType") and _is_csv(tinput["ContentType"]):
        try:
            parse(processing.get("InputFilter"))
            parse(processing.get("OutputFilter"))
        except JsonPathError as exc:
            raise ValidationError(str(exc)) from exc
        if processing.get("JoinSource") == "Input" and (
            tinput.get("SplitType") != "Line"
            or params["TransformOutput"].get("AssembleWith") != "Line"
        ):
            raise ValidationError(
                "To join CSV input with its inferences, set TransformInput.SplitType and "
                "TransformOutput.AssembleWith to Line."
            )
    if not s3io.list_keys(s3io.client(region), src["S3Uri"]):
        raise ValidationError(
            s3io.no_objects_message(src["S3Uri"], region, model.request.get("ExecutionRoleArn", ""))
        )


def _is_csv(content_type: str | None) -> bool:
    try:
        return get_content_type(content_type) == CSV
    except UserError:
        return False


# ----------------------------------------------------------------- container side
def csv_to_dmatrix(text: str) -> Any:
    """The container's CSV decoder: sniffed delimiter, ``""`` as NaN, numbers only."""
    import numpy as np
    import xgboost as xgb

    sniffed = csv.Sniffer().sniff(text.split("\n")[0][:512]).delimiter
    delimiter = "," if sniffed.isalnum() else sniffed
    rows = [["nan" if x == "" else x for x in line.split(delimiter)] for line in text.split("\n")]
    # float() per field words errors as the container's numpy 1.x does ("... float: 'n/a'").
    return xgb.DMatrix(np.array([[float(x) for x in row] for row in rows]))


def invoke(booster: Any, payload: bytes, content_type: str | None, accept: str | None) -> bytes:
    """One ``POST /invocations`` of the container in batch mode.

    Raises
    ------
    InvocationError
        413 (body over 6 MiB), 415 (unparsable payload or content type), 400 (prediction
        failed, e.g. more features than the model), 406 (unsupported Accept).
    """
    if len(payload) > CONTAINER_MAX_CONTENT_LENGTH:
        raise InvocationError(413, "Request Entity Too Large")
    try:
        if get_content_type(content_type) != CSV:
            raise RuntimeError(f"Content-type {content_type} is not supported.")
        dtest = csv_to_dmatrix(payload.strip().decode("utf-8"))
    except UserError as exc:
        raise InvocationError(415, str(exc)) from exc
    except RuntimeError as exc:
        raise InvocationError(415, str(exc)) from exc
    except Exception as exc:
        raise InvocationError(
            415,
            "Loading csv data failed with Exception, please ensure data is in csv format:"
            f"\n {type(exc)}\n {exc}",
        ) from exc
    try:
        preds = booster.predict(dtest, validate_features=False)
    except Exception as exc:
        # XGBoost appends its native stack trace; the reason keeps the message only.
        message = str(exc).split("\nStack trace:", 1)[0]
        raise InvocationError(400, f"Unable to evaluate payload provided: {message}") from exc
    if accept and accept.split(";")[0].strip().lower() not in (*SUPPORTED_ACCEPTS, "*/*"):
        raise InvocationError(
            406,
            f"Accept type {accept} is not supported. Please use supported accept types: "
            f"{list(SUPPORTED_ACCEPTS)}.",
        )
    return ("\n".join(map(str, preds.tolist())) + "\n").encode("utf-8")


def load_booster(model_dir: Path) -> Any:
    """Load the first non-hidden file of the model directory, one thread for prediction."""
    import xgboost as xgb

    names = [
        n for n in os.listdir(model_dir) if (model_dir / n).is_file() and not n.startswith(".")
    ]
    if not names:
        raise _ObjectFailedError("Unable to load model: the model archive holds no model file")
    booster = xgb.Booster()
    try:
        booster.load_model(str(model_dir / names[0]))
    except Exception as exc:
        raise _ObjectFailedError(f"Unable to load model: {exc}") from exc
    booster.set_param("nthread", "1")
    return booster


# ------------------------------------------------------------------ platform side
@dataclass(frozen=True)
class _Plan:
    """How to cut, filter, join and assemble records, from the job request."""

    split_lines: bool
    multi_record: bool
    max_bytes: int
    content_type: str | None
    accept: str | None
    assemble_lines: bool
    input_filter: CsvPath | None
    output_filter: CsvPath | None
    join_input: bool

    @classmethod
    def from_request(cls, params: dict[str, Any]) -> _Plan:
        tinput, toutput = params["TransformInput"], params["TransformOutput"]
        processing = params.get("DataProcessing") or {}
        is_csv = _is_csv(tinput.get("ContentType"))
        filters = is_csv and bool(processing)
        return cls(
            split_lines=tinput.get("SplitType", "None") == "Line",
            multi_record=params.get("BatchStrategy", "MultiRecord") == "MultiRecord",
            max_bytes=int(params.get("MaxPayloadInMB", DEFAULT_MAX_PAYLOAD_MB)) * MB,
            content_type=tinput.get("ContentType"),
            accept=toutput.get("Accept"),
            assemble_lines=toutput.get("AssembleWith", "None") == "Line",
            input_filter=parse(processing.get("InputFilter")) if filters else None,
            output_filter=parse(processing.get("OutputFilter")) if filters else None,
            join_input=is_csv and processing.get("JoinSource") == "Input",
        )


def _csv_fields(record: str) -> list[str]:
    return next(csv.reader([record]), [])


def _csv_line(fields: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()


def _records(data: bytes, plan: _Plan) -> list[bytes]:
    if not plan.split_lines:
        return [data]
    return [line.rstrip(b"\r") for line in data.split(b"\n") if line.rstrip(b"\r")]


def _batches(records: list[bytes], plan: _Plan, where: str) -> list[list[bytes]]:
    """Mini-batches within MaxPayloadInMB (records joined by newlines)."""
    if plan.max_bytes <= 0:
        raise _ObjectFailedError(
            f"{where}: MaxPayloadInMB 0 (chunked encoding) is not supported by this algorithm"
        )
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for i, record in enumerate(records):
        if len(record) > plan.max_bytes:
            raise _ObjectFailedError(
                f"{where}: record {i + 1} is {len(record)} bytes, larger than MaxPayloadInMB "
                f"({plan.max_bytes // MB} MB)"
            )
        extra = len(record) + (1 if current else 0)
        if current and (not plan.multi_record or size + extra > plan.max_bytes):
            batches.append(current)
            current, size, extra = [], 0, len(record)
        current.append(record)
        size += extra
    if current:
        batches.append(current)
    return batches


def transform_object(booster: Any, data: bytes, plan: _Plan, where: str) -> bytes:
    """Transform one input object into the bytes of its ``.out`` object.

    Raises
    ------
    _ObjectFailedError
        With a readable reason: a record too large, a filter outside a row, or the
        container's HTTP error for a mini-batch.
    """
    out = bytearray()
    for batch in _batches(_records(data, plan), plan, where):
        texts = [r.decode("utf-8") for r in batch]
        rows = [_csv_fields(t) for t in texts] if plan.input_filter or plan.join_input else []
        try:
            if plan.input_filter is not None:
                payload = "\n".join(_csv_line(plan.input_filter.select(r)) for r in rows).encode()
            else:
                payload = b"\n".join(batch)
            response = invoke(booster, payload, plan.content_type, plan.accept)
        except InvocationError as exc:
            raise _ObjectFailedError(
                f"{where}: ClientError: {exc.status} Message: {exc.message}"
            ) from exc
        except JsonPathError as exc:
            raise _ObjectFailedError(f"{where}: {exc}") from exc
        if plan.output_filter is None and not plan.join_input:
            lines = response.decode().split("\n")[:-1]
            out += (
                response
                if not plan.assemble_lines
                else "".join(f"{line}\n" for line in lines).encode()
            )
            continue
        predictions = response.decode().split("\n")[:-1]
        if len(predictions) != len(batch):
            raise _ObjectFailedError(
                f"{where}: {len(predictions)} inferences returned for {len(batch)} records"
            )
        for row, prediction in zip(rows or [[]] * len(batch), predictions, strict=True):
            joined = (row if plan.join_input else []) + _csv_fields(prediction)
            try:
                selected = plan.output_filter.select(joined) if plan.output_filter else joined
            except JsonPathError as exc:
                raise _ObjectFailedError(f"{where}: {exc}") from exc
            out += (_csv_line(selected) + ("\n" if plan.assemble_lines else "")).encode()
    return bytes(out)


def _fetch_model(s3: Any, url: str, model_dir: Path) -> Path:
    bucket, key = s3io.split_uri(url)
    archive = model_dir.parent / "model.tar.gz"
    s3io.download(s3, bucket, key, archive)
    model_dir.mkdir(parents=True, exist_ok=True)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            tar.extractall(model_dir, filter="data")
    else:
        shutil.copyfile(archive, model_dir / Path(key).name)
    return model_dir


def run_transform_job(backend: SageMakerBackend, job: TransformJob, model: Model) -> None:
    """The job thread: load the model, transform every object, upload the outputs."""
    params = job.request
    backend.mark_transform_started(job)
    job_dir = backend.workdir / "transform" / job.name
    try:
        if job_dir.exists():
            shutil.rmtree(job_dir)
        s3 = s3io.client(backend.region)
        booster = load_booster(
            _fetch_model(s3, model.container()["ModelDataUrl"], job_dir / "model")
        )
        plan = _Plan.from_request(params)
        uri = params["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, prefix = s3io.split_uri(uri)
        out_bucket, out_prefix = s3io.split_uri(params["TransformOutput"]["S3OutputPath"])
        gzipped = params["TransformInput"].get("CompressionType", "None") == "Gzip"
        done: list[tuple[Path, str]] = []
        failures: list[str] = []
        for key in s3io.list_keys(s3, uri):
            if job.stop_requested.is_set():
                backend.finish_transform(job, "Stopped")
                return
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            rel = s3io.relative_key(key, prefix)
            try:
                result = transform_object(
                    booster,
                    gzip.decompress(body) if gzipped else body,
                    plan,
                    f"s3://{bucket}/{key}",
                )
            except _ObjectFailedError as exc:
                LOG.warning("transform job %s: %s", job.name, exc)
                failures.append(str(exc))
                continue
            local = job_dir / "output" / f"{rel}.out"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(result)
            done.append((local, s3io.join_key(out_prefix, f"{rel}.out")))
        if job.stop_requested.is_set():
            backend.finish_transform(job, "Stopped")
            return
        for local, out_key in done:
            s3.upload_file(str(local), out_bucket, out_key)
        if failures:
            backend.finish_transform(
                job,
                "Failed",
                reason=f"ClientError: See job logs for more information ({failures[0]})",
            )
        else:
            backend.finish_transform(job, "Completed")
    except _ObjectFailedError as exc:
        backend.finish_transform(job, "Failed", reason=f"ClientError: {exc}")
    except Exception as exc:  # the job thread's boundary: a job must never stay InProgress
        LOG.exception("transform job %s crashed", job.name)
        backend.finish_transform(
            job,
            "Failed",
            reason="InternalServerError: We encountered an internal error. Please try again. "
            f"(local: {type(exc).__name__}: {exc})",
        )
