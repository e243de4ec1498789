"""This machine's memory and cores, shared by the local training jobs.

SageMaker gives each training job instances of its own; here the hosts of every job run on
one machine. A run starts its models' training jobs together (four with the default horizon
groups), and from about 9,000 series on (under a third of M5), their hosts together need
more memory than a 24 GB machine has: the kernel then kills one of them (exit code 137) and
the run fails although each job alone would fit. So a job whose hosts would not fit beside
the jobs already training waits after its download, as a SageMaker job waits for capacity,
and starts when one of them ends. A job too large even alone still starts once nothing else
trains: the estimate can be wrong, and refusing a job on an estimate would fail runs that
could finish.

The cores are shared too. On SageMaker XGBoost uses every core of a job's instances; here
the hosts training at a time share this machine's cores, at least one thread each, and the
share is told again whenever a job starts or ends: a job that trains alone (the jobs of a
large run train one after another, and the last of a small run's four ends alone) uses
every core, and jobs training together never ask for more threads than there are cores.
Trees do not depend on it: XGBoost 1.7's exact, approx and hist methods grow the same
model file, byte for byte, on 1 to 4 threads ('gblinear' with its default shotgun updater
is not deterministic on more than one, as in the container).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def available_memory() -> int:
    """What this process's processes can be given now without swapping or being killed:
    the operating system's available memory, or less in a container whose memory cgroup
    limits it (a CI runner's, say), where what the machine has is not what may be used."""
    machine = int(psutil.virtual_memory().available)
    limited = cgroup_memory_available()
    return machine if limited is None else min(machine, limited)


def cgroup_memory_available(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP
) -> int | None:
    """The room left under this process's memory cgroup limits, or None without one.

    Its group is read from `proc_cgroup` (v2's `0::<path>` line, v1's `memory` one), and
    it and each parent up to the root are read where they are visible: a container sees its
    own group at the root (Docker's, Kubernetes'), a service its nested one (systemd's
    `MemoryMax` on a slice). cgroup v2 has `memory.max` and `memory.current`, v1
    `memory/memory.limit_in_bytes` and `memory.usage_in_bytes`. The usage counts the page
    cache, which the kernel reclaims before it kills anything, so its inactive file pages
    are taken back off, as `docker stats` does. "max", or v1's number near 2**63, is no
    limit. The tightest group decides.
    """
    rooms = [room for group, v1 in _memory_groups(root, proc_cgroup)
             if (room := _room_in(group, v1)) is not None]  # fmt: skip
    return min(rooms) if rooms else None


def _memory_groups(root: Path, proc_cgroup: Path) -> list[tuple[Path, bool]]:
    """This process's memory cgroups and their parents (folder, whether v1), as far as
    they are visible here; without /proc's word, the roots alone."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    groups: list[tuple[Path, bool]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            base, v1 = root, False
        elif "memory" in parts[1].split(","):
            base, v1 = root / "memory", True
        else:
            continue
        path = parts[2].removesuffix(" (deleted)").strip("/")
        # A path with ".." names nothing inside the tree; a group not visible here (a
        # container's own is at its root) has no files, and its parents are read instead.
        group = base if ".." in path.split("/") else base / path
        while group != base and base in group.parents:
            groups.append((group, v1))
            group = group.parent
        groups.append((base, v1))
    return groups or [(root, False), (root / "memory", True)]


def _room_in(group: Path, v1: bool) -> int | None:
    """The room under one group's limit, or None where it has none (or none readable)."""
    limit_name, usage_name, inactive = (
        ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        if v1
        else ("memory.max", "memory.current", "inactive_file")
    )
    try:
        limit_text = (group / limit_name).read_text().strip()
        usage = int((group / usage_name).read_text())
    except (OSError, ValueError):
        return None
    if not limit_text.isdigit() or int(limit_text) >= 2**62:  # "max", or v1's unlimited
        return None
    reclaimable = _stat_value(group / "memory.stat", inactive)
    return max(0, int(limit_text) - max(0, usage - reclaimable))


def _stat_value(path: Path, key: str) -> int:
    """One counter of a cgroup's `memory.stat` ("<key> <bytes>" lines); 0 if absent."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class _Holding:
    """What an admitted job holds: its estimated memory, its hosts, and how to tell it its
    share of the cores."""

    need: int
    hosts: int
    tell: Callable[[int], None]


class Capacity:
    """Admits training jobs, in the order they ask, while their estimated memory fits in
    what this machine has, and shares its cores among the hosts of the jobs it holds.

    The budget is what the machine has available whenever no job holds memory, so memory
    taken by other programs between runs is respected. First come, first served: a large
    job is not overtaken forever by smaller ones that keep fitting. Waiting is on a
    condition that a job's end (`release`) or a stop request (`wake`) signals: nothing
    polls.
    """

    def __init__(
        self, available: Callable[[], int] = available_memory, cores: int | None = None
    ) -> None:
        self._available = available
        self._cores = cores or usable_cores()
        self._changed = threading.Condition()
        self._held: dict[str, _Holding] = {}
        self._share = 0  # threads per host last told
        self._queue: deque[str] = deque()
        self._budget = 0

    def admit(
        self,
        job: str,
        need: int,
        stopped: Callable[[], bool],
        on_wait: Callable[[int, int], None],
        hosts: int = 1,
        on_share: Callable[[int], None] = lambda threads: None,
    ) -> int | None:
        """Block until `job` is first in line and `need` bytes fit beside what running jobs
        hold, then hold them for it. `on_wait(held, budget)` is called once, outside the
        lock, if the job has to wait. Returns the threads each of its `hosts` may use (this
        machine's cores over the hosts training, this job's included; at least one), or
        None, holding nothing, if `stopped()` turns true first.

        `on_share(threads)` is called with that share before this returns and again each
        time it changes until `release`, under the lock so that shares arrive in order: it
        must be quick (the local SageMaker writes a file each host reads between rounds)."""
        told = False
        with self._changed:
            self._queue.append(job)
            try:
                while not stopped():
                    if not self._held:
                        self._budget = self._available()
                    held = sum(holding.need for holding in self._held.values())
                    first = self._queue[0] == job
                    if first and (not self._held or held + need <= self._budget):
                        self._held[job] = _Holding(need, hosts, on_share)
                        on_share(self._reshare(job))
                        return self._share
                    if not told:
                        told = True
                        self._changed.release()  # a slow console must not hold up releases
                        try:
                            on_wait(held, self._budget)
                        finally:
                            self._changed.acquire()
                        continue
                    self._changed.wait()
                return None
            finally:
                self._queue.remove(job)
                self._changed.notify_all()  # the next in line may fit now

    def release(self, job: str) -> None:
        """Give back what `job` held (nothing if it held nothing) and wake waiting jobs."""
        with self._changed:
            if self._held.pop(job, None) is not None:
                self._reshare()
            self._changed.notify_all()

    def _reshare(self, new_job: str | None = None) -> int:
        """Divide the cores among the hosts held now; tell the jobs already told (not
        `new_job`) if their share changed. Called with the lock held."""
        hosts = sum(holding.hosts for holding in self._held.values())
        share = max(1, self._cores // hosts) if hosts else 0
        if share != self._share:
            for job, holding in self._held.items():
                if job != new_job:
                    holding.tell(share)
        self._share = share
        return share

    def wake(self) -> None:
        """Wake waiting jobs so that a stopped one can leave."""
        with self._changed:
            self._changed.notify_all()
