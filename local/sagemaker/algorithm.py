"""One host of a training job running the built-in XGBoost 1.7-1 algorithm mode.

Started by ``training.py`` as ``python -m m5flow_local.sagemaker.algorithm <config.json>``,
one process per instance, so XGBoost's native threads and memory stay out of the
server process and a stop can kill the work outright.  The flow follows the
container's ``algorithm_mode/train.py`` and ``distributed.py`` (branch 1.7-1):

1. validate hyperparameters, then channels (``hyperparameters.py``, ``algorithm_data.py``);
2. load ``train``/``validation`` into DMatrices (hidden files fatal, empty -> ``None``);
3. with several hosts, join a first collective to share who has data; hosts without
   training (or, if a validation channel exists, validation) data leave with success;
   the others form a second collective and train together;
4. train with the container's callbacks (evaluation log, early stopping on the last
   ``eval_metric`` with ``save_best``), the master saves ``xgboost-model``.

On failure the process writes ``<output>/failure`` the way sagemaker-containers
does (``framework error:`` + traceback + message) and exits 1.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, cast

from m5flow_local.sagemaker import algorithm_data as data
from m5flow_local.sagemaker import hyperparameters
from m5flow_local.sagemaker.algorithm_metrics import eval_metrics_and_feval
from m5flow_local.sagemaker.exceptions import AlgorithmError, PlatformError, UserError
from m5flow_local.sagemaker.hyperparameters import MAXIMIZE_METRICS, TUNING_METRICS

LOG = logging.getLogger("m5flow_local.sagemaker.algorithm")
MODEL_NAME = "xgboost-model"
LOCAL_HOST_IP = "127.0.0.1"
# XGBoost failures the container reports as the user's fault (xgb_constants.CUSTOMER_ERRORS).
CUSTOMER_ERRORS = (
    "label must be in [0,1] for logistic regression",
    "label must be in [0, num_class)",
    "Target is multiclass but average='binary'",
    "feature_names mismatch",
    "Check failed: preds.size() == info.labels_.size()",
    "Check failed: !auc_error AUC: the dataset only contains pos or neg samples",
    "Check failed: base_score > 0.0f && base_score < 1.0f base_score must be in (0,1) for "
    "logistic loss",
    "Check failed: label_correct PoissonRegression: label must be nonnegative",
    "Check failed: label_correct TweedieRegression: label must be nonnegative",
    "Parameter reg_lambda should be greater equal to 0",
)


class _SaveModelEveryRound:
    """``save_model_on_termination``: keep the latest model on disk so a stop keeps it."""

    def __init__(self, model_dir: Path, is_master: bool) -> None:
        import xgboost as xgb

        class _Callback(xgb.callback.TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                if is_master:
                    model_dir.mkdir(parents=True, exist_ok=True)
                    tmp = model_dir / f".{MODEL_NAME}.tmp"
                    model.save_model(str(tmp))
                    os.replace(tmp, model_dir / MODEL_NAME)
                return False

        self.callback = _Callback()
        # A stop sends SIGTERM; leave at once, keeping the model saved so far.
        signal.signal(signal.SIGTERM, lambda signo, frame: os._exit(0))


class _FollowThreadShare:
    """Before training and after each round, set `nthread` to the share of this machine's
    cores the platform last wrote for this host (`capacity`), which changes as other jobs
    start and end. The container has an instance's cores to itself and needs no such thing;
    the trees do not depend on the thread count."""

    def __init__(self, threads_file: Path) -> None:
        import xgboost as xgb

        told = [""]

        def follow(model: Any) -> None:
            threads = threads_file.read_text()
            if threads != told[0]:
                told[0] = threads
                model.set_param("nthread", int(threads))

        class _Callback(xgb.callback.TrainingCallback):
            def before_training(self, model: Any) -> Any:
                follow(model)
                return model

            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                follow(model)
                return False

        self.callback = _Callback()


def _final_metrics(history: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Last logged value of each metric the platform scrapes (``validation:<metric>``)."""
    metrics = []
    for data_name, by_metric in history.items():
        for metric, values in by_metric.items():
            name = f"{data_name}:{metric}"
            if name in TUNING_METRICS and values:
                # The platform parses the log line, printed with 5 decimals.
                metrics.append({"MetricName": name, "Value": float(f"{values[-1]:.5f}")})
    return metrics


def train_job(
    cfg: dict[str, Any],
    train_dm: Any,
    val_dm: Any,
    model_dir: Path,
    output_dir: Path,
    is_master: bool,
    threads_file: Path,
) -> None:
    """Train one model on this host's data and, on the master, save it (``train.py``)."""
    import xgboost as xgb

    cfg = dict(cfg)
    num_round = cfg.pop("num_round")
    save_on_termination = cfg.pop("save_model_on_termination", "false")
    tuning_param = cfg.pop("_tuning_objective_metric", None)
    eval_metric = cfg.get("eval_metric")
    builtin, feval, tuning = eval_metrics_and_feval(tuning_param, eval_metric)
    if builtin:
        cfg["eval_metric"] = builtin
    else:
        cfg.pop("eval_metric", None)
    early_stopping_rounds = cfg.pop("early_stopping_rounds", None)
    early_stopping_metric = None
    if early_stopping_rounds:
        if tuning:
            early_stopping_metric = tuning[-1]
        elif eval_metric:
            early_stopping_metric = eval_metric[-1]

    LOG.info("Train matrix has %s rows and %s columns", train_dm.num_row(), train_dm.num_col())
    watchlist = [(train_dm, "train")]
    if val_dm is not None:
        watchlist.append((val_dm, "validation"))
    callbacks: list[Any] = [xgb.callback.EvaluationMonitor()]
    if save_on_termination == "true":
        callbacks.append(_SaveModelEveryRound(model_dir, is_master).callback)
    if "nthread" not in cfg:  # as the container, XGBoost takes the cores it is given
        callbacks.append(_FollowThreadShare(threads_file).callback)
    if val_dm is not None and early_stopping_metric and early_stopping_rounds:
        callbacks.append(
            xgb.callback.EarlyStopping(
                rounds=early_stopping_rounds,
                data_name="validation",
                metric_name=early_stopping_metric,
                maximize=early_stopping_metric in MAXIMIZE_METRICS,
                save_best=True,
            )
        )
    history: dict[str, Any] = {}
    try:
        booster = xgb.train(
            cfg,
            train_dm,
            num_boost_round=num_round,
            evals=watchlist,
            feval=feval,
            callbacks=callbacks,
            verbose_eval=False,
            evals_result=history,
        )
    except Exception as exc:
        if any(marker in str(exc) for marker in CUSTOMER_ERRORS):
            raise UserError(str(exc)) from exc
        raise AlgorithmError(f"XGB train call failed with exception:\n {exc}") from exc
    model_dir.mkdir(parents=True, exist_ok=True)
    if is_master:
        booster.save_model(str(model_dir / MODEL_NAME))
        (output_dir / "metrics.json").write_text(json.dumps(_final_metrics(history)))


def _collective_env(port: int, host: str) -> dict[str, Any]:
    return {"DMLC_TRACKER_URI": LOCAL_HOST_IP, "DMLC_TRACKER_PORT": port, "DMLC_TASK_ID": host}


def _distributed_train(include: bool, run: dict[str, Any], train_args: dict[str, Any]) -> None:
    """Two collectives, as the container's ``rabit_run``: agree on who has data, then train.

    Ranks follow the sorted host names (``sortby="task"``), so the master is the
    first host in name order, as in the container.  The second tracker is started
    by the first host with data, which broadcasts its port in the first collective
    (the container uses fixed ports; a local machine may run several jobs).
    """
    from xgboost import collective
    from xgboost.tracker import RabitTracker

    host = run["current_host"]
    tracker2 = None
    with collective.CommunicatorContext(**_collective_env(run["tracker_port"], host)):
        rank, world = collective.get_rank(), collective.get_world_size()
        mine = {"host": host, "include_in_training": include}
        # Each rank sends its own record and receives the others' (None: to be received).
        records = [
            cast(dict[str, Any], collective.broadcast(mine if rank == i else None, i))
            for i in range(world)
        ]
        with_data = [r["host"] for r in records if r["include_in_training"]]
        port2 = None
        if len(with_data) > 1:
            root = next(i for i, r in enumerate(records) if r["host"] == with_data[0])
            if rank == root:
                tracker2 = RabitTracker(
                    LOCAL_HOST_IP, len(with_data), port=0, use_logger=True, sortby="task"
                )
                tracker2.start(len(with_data))
                port2 = tracker2.port
            port2 = collective.broadcast(port2, root)
    if not include:
        LOG.warning("Host %s not being used for distributed training.", host)
        return
    if len(with_data) > 1:
        with collective.CommunicatorContext(**_collective_env(int(port2 or 0), host)):
            train_job(**train_args, is_master=collective.get_rank() == 0)
        if tracker2 is not None and tracker2.thread is not None:
            tracker2.thread.join()
    else:
        LOG.debug(
            "Only 1 host with training data, starting single node training job from: %s", host
        )
        train_job(**train_args, is_master=True)


def sagemaker_train(run: dict[str, Any]) -> None:
    """Validate, load and train for one host, as the container's ``sagemaker_train``."""
    cfg = hyperparameters.validate(run["hyperparameters"])
    if cfg.get("updater"):
        cfg["updater"] = ",".join(cfg["updater"])
    channels = data.validate_channels(run["input_data_config"])
    file_type = data.get_content_type(channels["train"].get("ContentType"))
    csv_weights = cfg.get("csv_weights", 0)
    train_path = run["channel_dirs"]["train"]
    val_path = run["channel_dirs"].get("validation")
    if cfg.pop("use_dask_gpu_training", "false") == "true":
        raise UserError(
            "Some configurations unsuitable for Dask GPU training were found: "
            "GPU training requires GPU instances, which the local SageMaker lacks"
        )
    if "_kfold" in cfg:
        raise PlatformError("The local SageMaker does not implement _kfold cross-validation.")

    host_dir = Path(run["host_dir"])
    train_size = data.get_size(train_path)
    val_size = data.get_size(val_path)
    if train_size > 0:
        data.validate_data_file_path(train_path, file_type)
    if val_size > 0:
        data.validate_data_file_path(val_path, file_type)
    bins = data.quantile_bins(cfg, len(run["hosts"]))
    train_dm = (
        data.get_dmatrix(train_path, file_type, host_dir / "tmp" / "train", csv_weights, bins)
        if train_size > 0
        else None
    )
    val_dm = (
        data.get_dmatrix(val_path, file_type, host_dir / "tmp" / "validation", csv_weights)
        if val_size > 0
        else None
    )
    missing_validation = "validation" in channels and val_dm is None

    train_args: dict[str, Any] = {
        "cfg": cfg,
        "train_dm": train_dm,
        "val_dm": val_dm,
        "model_dir": Path(run["model_dir"]),
        "output_dir": Path(run["output_dir"]),
        "threads_file": Path(run["threads_file"]),
    }
    hosts = run["hosts"]
    if len(hosts) > 1:
        include = train_dm is not None and not missing_validation
        if train_dm is None:
            LOG.warning("Host %s does not have training data.", run["current_host"])
        if missing_validation:
            LOG.warning("Host %s does not have validation data.", run["current_host"])
        _distributed_train(include, run, train_args)
    elif train_dm is not None:
        if missing_validation:
            raise UserError(f"No data in validation channel path {val_path}")
        LOG.info("Single node training.")
        train_job(**train_args, is_master=True)
    else:
        raise UserError(f"No data in training channel path {train_path}")


def main(argv: list[str]) -> int:
    """Run one host from its config file; write the failure file and return 1 on error."""
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s:%(levelname)s] %(message)s", stream=sys.stdout
    )
    run = json.loads(Path(argv[0]).read_text())
    output_dir = Path(run["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        sagemaker_train(run)
    except Exception as exc:  # the trainer's boundary: every failure becomes the failure file
        failure = f"framework error: \n{traceback.format_exc()}\n{exc}"
        (output_dir / "failure").write_text(failure)
        LOG.error("Reporting training FAILURE\n%s", failure)
        return 1
    LOG.info("Reporting training SUCCESS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
