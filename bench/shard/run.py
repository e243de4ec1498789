"""Measure the shard step against the I/O floor, Nixtla mlforecast and a naive pandas pipeline.

    .venv/bin/python bench/shard/run.py [--mlforecast-python PATH] [--repeat N]

Generates the full-scale synthetic M5 set (30,490 series, cached) and a 1/10 one (3,049
series from the same generator: 305 items in the ten stores, the same 70 groups), then
runs each pipeline of `pipelines.py` in its own process and reads the wall time and the peak
resident memory of that process (`wait4`). The naive pandas pipeline needs more memory than
this machine has at full scale, so it runs on the 1/10 subset only, next to the shard step on
the same subset. Prints one table, then the ratios the targets are about. Not part of the
test run: it takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines import blocks_dir  # run from any directory: Python puts bench/shard first

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORE = ROOT / "layers" / "core"
FULL, TENTH = 30490, 3049


@dataclass
class Run:
    pipeline: str
    data: str
    wall: float = float("nan")
    cpu: float = float("nan")  # user + system seconds: steadier than wall on a shared machine
    rss_gib: float = float("nan")
    rows: int = 0
    bytes: int = 0
    error: str = ""


def dataset(cache: Path, series: int) -> Path:
    """The synthetic M5 files for `series` series, generated once."""
    folder = cache / f"m5-synth-{series}-seed0"
    if not (folder / "sell_prices.csv").is_file():
        from m5flow_local.synth import write_synthetic_m5  # the project's venv has it

        print(f"generating {series:,} series into {folder} ...", flush=True)
        write_synthetic_m5(folder, series, seed=0)
    return folder


def measure(
    python: str, pipeline: str, data: Path, label: str, limit_gib: float, out: Path | None = None
) -> Run:
    """Run one pipeline in a fresh process; its own wall time and peak RSS."""
    run = Run(pipeline, label)
    keep = out is not None
    out = out or Path(tempfile.mkdtemp(prefix=f"bench-{pipeline}-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CORE), str(ROOT)])}

    def cap() -> None:  # a MemoryError in the child rather than the machine's OOM killer
        limit = int(limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(
            [python, str(HERE / "pipelines.py"), pipeline, str(data), str(out)],
            stdout=stdout, stderr=stderr, env=env, preexec_fn=cap,
        )  # fmt: skip
        # wait4, not Popen.wait: the rusage of this child alone (ru_maxrss in KiB on Linux)
        _, status, usage = os.wait4(child.pid, 0)
        run.wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        printed, errors = stdout.read().decode(), stderr.read().decode()
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    if child.returncode != 0:
        run.error = ((errors.strip().splitlines() or [f"exit {child.returncode}"])[-1])[:120]
        return run
    run.rss_gib = usage.ru_maxrss / 2**20
    run.cpu = usage.ru_utime + usage.ru_stime
    result = json.loads(printed.strip().splitlines()[-1])
    run.rows, run.bytes = result["rows"], result["bytes"]
    if "seconds" in result:  # the floor times itself after loading its blocks
        run.wall, run.cpu, run.rss_gib = result["seconds"], result["cpu_seconds"], float("nan")
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cache = os.environ.get("M5FLOW_BENCH_CACHE", Path.home() / ".cache" / "m5flow-bench")
    parser.add_argument("--cache", default=cache, help="where the generated data sets stay")
    parser.add_argument("--mlforecast-python", default=sys.executable,
                        help="an interpreter with mlforecast (it needs pandas < 3)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; medians are shown")
    parser.add_argument(
        "--only", default="shard,floor@full,mlforecast@1/10,naive@1/10",
        help="pipelines, or pipeline@full / pipeline@1/10 (mlforecast does not fit in 24 GiB "
        "at full scale either: add mlforecast@full to see it fail)",
    )  # fmt: skip
    parser.add_argument("--memory-limit-gib", type=float, default=20.0)
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    full, tenth = dataset(cache, FULL), dataset(cache, TENTH)
    plan = [
        ("shard", full, "full"), ("floor", full, "full"), ("mlforecast", full, "full"),
        ("shard", tenth, "1/10"), ("naive", tenth, "1/10"), ("mlforecast", tenth, "1/10"),
    ]  # fmt: skip
    wanted = args.only.split(",")
    plan = [p for p in plan if p[0] in wanted or f"{p[0]}@{p[2]}" in wanted]
    blocks = blocks_dir(full)
    if any(p[0] == "floor" for p in plan) and not (blocks / "ids.npy").is_file():
        print("computing the shard step's blocks once, for the floor ...", flush=True)
        limit = args.memory_limit_gib
        prepared = measure(sys.executable, "prepare_floor", full, "full", limit, out=blocks)
        if prepared.error:
            raise SystemExit(f"preparing the floor failed: {prepared.error}")
    results: dict[tuple[str, str], list[Run]] = {}
    for _ in range(args.repeat):
        for pipeline, data, label in plan:
            python = args.mlforecast_python if pipeline == "mlforecast" else sys.executable
            run = measure(python, pipeline, data, label, args.memory_limit_gib)
            line = f"{pipeline:10s} {label:5s} {run.wall:6.1f} s {run.cpu:6.1f} CPU s"
            line += f" {run.rss_gib:5.2f} GiB"
            print(f"  {line} {run.error}", flush=True)
            results.setdefault((pipeline, label), []).append(run)
    table = {key: _median(runs) for key, runs in results.items()}
    print(report(table, args.repeat))
    return 0


def _median(runs: list[Run]) -> Run:
    good = [r for r in runs if not r.error] or runs
    best = sorted(good, key=lambda r: r.wall)[len(good) // 2]
    wall = statistics.median(r.wall for r in good)
    cpu = statistics.median(r.cpu for r in good)
    rss = statistics.median(r.rss_gib for r in good)
    return Run(best.pipeline, best.data, wall, cpu, rss, best.rows, best.bytes, best.error)


def report(table: dict[tuple[str, str], Run], repeat: int) -> str:
    lines = [f"\nmedian of {repeat} run(s), {len(os.sched_getaffinity(0))} CPUs\n",
             "| pipeline | data | wall s | CPU s | peak RSS GiB | rows | MB written |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for run in table.values():
        if run.error:
            lines.append(f"| {run.pipeline} | {run.data} | failed: {run.error} | | | | |")
        else:
            lines.append(f"| {run.pipeline} | {run.data} | {run.wall:.1f} | {run.cpu:.1f} | "
                         f"{run.rss_gib:.2f} | "
                         f"{run.rows:,} | {run.bytes / 1e6:,.0f} |")  # fmt: skip

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> str:
        if a in table and b in table and not table[a].error and not table[b].error:
            return (
                f"{table[a].wall / table[b].wall:.2f}x wall, {table[a].cpu / table[b].cpu:.2f}x CPU"
            )
        return "n/a"

    lines += [
        "",
        f"shard step / I/O floor (full):        {ratio(('shard', 'full'), ('floor', 'full'))}"
        "   (target <= 1.3x)",
        f"mlforecast / shard step (full):       {ratio(('mlforecast', 'full'), ('shard', 'full'))}"
        "   (target >= 6x)",
        f"mlforecast / shard step (1/10):       {ratio(('mlforecast', '1/10'), ('shard', '1/10'))}"
        "   (target >= 6x; mlforecast does not fit in memory at full scale)",
        f"naive pandas / shard step (1/10):     {ratio(('naive', '1/10'), ('shard', '1/10'))}"
        "   (target >= 30x; naive does not fit in memory at full scale)",
    ]
    full = table.get(("shard", "full"))
    for name in ("naive", "mlforecast"):
        tenth = table.get((name, "1/10"))
        if tenth and full and not tenth.error and not full.error:
            lines.append(
                f"{name} x10 (linear) / shard step (full): {tenth.wall * 10 / full.wall:.1f}x, "
                f"peak RSS x10: {tenth.rss_gib * 10:.0f} GiB   (extrapolated)"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
