"""Check `m5flow.instances`' memory estimate against the built-in XGBoost's own loading.

    .venv/bin/python bench/memory/run.py [--series 3049] [--rounds 20] [--models h7,h28]

Generates `--series` synthetic series, shards them as Parquet and as CSV with the project's
shard step, then for each model and format trains in a fresh process the way the 1.7-1
container does (data_utils: Parquet through `pq.read_table(...).to_pandas().to_numpy()` into
a DMatrix of the features with the first column as label; CSV through XGBoost's own URI
parser), the train channel then the validation channel if the model has one (an
early-stopped one: `DirectTrees` 0), then `--rounds` rounds of the
default hyperparameters. Prints each host's peak resident memory next to
`instances.host_memory(model, 1)`: the ratio measured / estimated must stay below 1 for the
start-training step to give no instance more data than it holds. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Runs in the child: the container's loading, then training, then the peak.
_HOST = r"""
import json, resource, sys
import pandas as pd, pyarrow.parquet as pq, psutil, xgboost as xgb
from m5flow.hyperparameters import DEFAULT_HYPERPARAMETERS

channels, fmt, rounds = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
before = psutil.Process().memory_info().rss

def load(path):
    if fmt == "csv":
        return xgb.DMatrix(f"{path}?format=csv&label_column=0")
    frame = pq.read_table(path).to_pandas()  # the table is dropped once converted, as there
    data = frame.to_numpy() if isinstance(frame, pd.DataFrame) else frame
    del frame
    return xgb.DMatrix(data[:, 1:], label=data[:, 0])

train = load(channels["train"])
# Models of a fixed count of trees (the default's) train on every day: no validation channel.
evals = [(load(channels["validation"]), "validation")] if "validation" in channels else []
params = {k: v for k, v in DEFAULT_HYPERPARAMETERS.items()
          if k not in ("num_round", "early_stopping_rounds")}
xgb.train(params, train, rounds, evals=evals, verbose_eval=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "interpreter": before}))
"""


def _m5flow(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "m5flow_local.cli", *args], check=True, capture_output=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=3049)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--models", default="h7,h28")
    args = parser.parse_args()

    from m5flow.instances import BYTES_PER_CELL, GIB, HOST_BASE_BYTES, host_memory
    from m5flow.manifest import Manifest

    print(f"| format | model | rows | cells | peak GiB | estimate GiB | ratio | bytes a cell "
          f"(estimate {BYTES_PER_CELL}) |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    worst = 0.0
    with tempfile.TemporaryDirectory() as work:
        data = Path(work, "data")
        _m5flow("synth", "--series", str(args.series), "--out", str(data), "--seed", "0")
        for fmt in ("parquet", "csv"):
            out = Path(work, fmt)
            _m5flow("shard", str(data), str(out), "--format", fmt)
            (run,) = (out / "runs").iterdir()
            manifest = Manifest.from_json((run / "manifest.json").read_bytes())
            for name in args.models.split(","):
                model = manifest.model(name)
                channels = {c: str(run / c / name) for c in ("train", "validation")
                            if getattr(model, c)}  # fmt: skip
                result = subprocess.run(
                    [sys.executable, "-c", _HOST, json.dumps(channels), fmt, str(args.rounds)],
                    check=True, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1"},
                )  # fmt: skip
                measured = json.loads(result.stdout)
                rows = sum(s.rows for s in (*model.train, *model.validation))
                cells = rows * (len(model.feature_names) + 1)
                estimate = host_memory(model, 1)
                ratio = measured["peak"] / estimate
                worst = max(worst, ratio)
                per_cell = (measured["peak"] - measured["interpreter"]) / cells
                cols = [fmt, name, f"{rows:,}", f"{cells:,}", f"{measured['peak'] / GIB:.2f}",
                        f"{estimate / GIB:.2f}", f"{ratio:.2f}", f"{per_cell:.1f}"]  # fmt: skip
                print("| " + " | ".join(cols) + " |", flush=True)
    base = HOST_BASE_BYTES >> 20
    print(f"\nworst measured / estimated: {worst:.2f} (the estimate's host base: {base} MiB)")
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
