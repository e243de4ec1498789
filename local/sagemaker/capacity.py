"""This machine's memory, shared by the local training jobs.

SageMaker gives each training job instances of its own; here the hosts of every job run on
one machine. A run starts its models' training jobs together (four with the default horizon
groups), and from about 9,000 series on (under a third of M5), their hosts together need
more memory than a 24 GB machine has: the kernel then kills one of them (exit code 137) and
the run fails although each job alone would fit. So a job whose hosts would not fit beside
the jobs already training waits after its download, as a SageMaker job waits for capacity,
and starts when one of them ends. A job too large even alone still starts once nothing else
trains: the estimate can be wrong, and refusing a job on an estimate would fail runs that
could finish.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

# A training host's peak over its data, measured with local/sagemaker/algorithm.py on one
# host of 4.7 M rows x 34 float32 Parquet columns (a tenth of M5, default hyperparameters):
# 2.5 GB with the container's DMatrix (8 bytes a cell, the matrix it is built from,
# XGBoost's histogram index and gradients), 1.9 GB with a QuantileDMatrix (the bins
# only). Per cell over the base: 14 and 10 bytes; the margin covers other data.
BYTES_PER_PARQUET_CELL = 16
BYTES_PER_QUANTILE_CELL = 11
# CSV and libsvm go through XGBoost's own parser: its DMatrix holds 8 bytes a cell, which
# take 2-8 bytes of text; 3 bytes per byte of text leaves room for the parser's buffers.
BYTES_PER_TEXT_BYTE = 3
HOST_BASE_BYTES = 250 * 2**20  # Python, XGBoost and pyarrow loaded, before any data


def _data_files(directory: Path) -> Iterable[Path]:
    return (p for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith("."))


def host_memory_estimate(
    channel_dirs: Iterable[Path], parquet: bool, quantile: bool = False
) -> int:
    """Bytes a training host will need at its peak, from its downloaded channels: Parquet
    by its cells (row and column counts from the files' footers), other formats by their
    size. `parquet` is the train channel's content type, which the algorithm reads every
    channel as; `quantile`, whether it loads the training data as a QuantileDMatrix
    (`algorithm_data.quantile_bins`)."""
    import pyarrow.parquet as pq

    per_cell = BYTES_PER_QUANTILE_CELL if quantile else BYTES_PER_PARQUET_CELL
    total = HOST_BASE_BYTES
    for directory in channel_dirs:
        for path in _data_files(directory):
            try:
                metadata = pq.read_metadata(path) if parquet else None
            except Exception:  # not Parquet after all: the algorithm will say so
                metadata = None
            if metadata is None:
                total += path.stat().st_size * BYTES_PER_TEXT_BYTE
            else:
                total += metadata.num_rows * metadata.num_columns * per_cell
    return total


def available_memory() -> int:
    """What the operating system can give processes now without swapping."""
    return int(psutil.virtual_memory().available)


class MemoryGate:
    """Admits training jobs, in the order they ask, while their estimated memory fits in
    what this machine has.

    The budget is what the machine has available whenever no job holds memory, so memory
    taken by other programs between runs is respected. First come, first served: a large
    job is not overtaken forever by smaller ones that keep fitting. Waiting is on a
    condition that a job's end (`release`) or a stop request (`wake`) signals: nothing
    polls.
    """

    def __init__(self, available: Callable[[], int] = available_memory) -> None:
        self._available = available
        self._changed = threading.Condition()
        self._held: dict[str, int] = {}
        self._queue: deque[str] = deque()
        self._budget = 0

    def admit(
        self,
        job: str,
        need: int,
        stopped: Callable[[], bool],
        on_wait: Callable[[int, int], None],
    ) -> bool:
        """Block until `job` is first in line and `need` bytes fit beside what running jobs
        hold, then hold them for it. `on_wait(held, budget)` is called once, outside the
        gate's lock, if the job has to wait. Returns False, holding nothing, if `stopped()`
        turns true first."""
        told = False
        with self._changed:
            self._queue.append(job)
            try:
                while not stopped():
                    if not self._held:
                        self._budget = self._available()
                    held = sum(self._held.values())
                    first = self._queue[0] == job
                    if first and (not self._held or held + need <= self._budget):
                        self._held[job] = need
                        return True
                    if not told:
                        told = True
                        self._changed.release()  # a slow console must not hold up releases
                        try:
                            on_wait(held, self._budget)
                        finally:
                            self._changed.acquire()
                        continue
                    self._changed.wait()
                return False
            finally:
                self._queue.remove(job)
                self._changed.notify_all()  # the next in line may fit now

    def release(self, job: str) -> None:
        """Give back what `job` held (nothing if it held nothing) and wake waiting jobs."""
        with self._changed:
            self._held.pop(job, None)
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake waiting jobs so that a stopped one can leave."""
        with self._changed:
            self._changed.notify_all()
