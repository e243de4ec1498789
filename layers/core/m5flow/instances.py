"""How many SageMaker instances a model's training job needs to hold its data.

The built-in XGBoost loads a host's whole share of the training data into memory before it
trains, so data that outgrows one instance fails the job with an out-of-memory exit (137),
often after the instances were paid for and the data downloaded. The blog this project grew
from split its M5 training over 15 instances for that reason. The full M5 data set gives
each model about 46 M training rows of 34 cells: roughly 30 GB in the container, where the
default `ml.m5.xlarge` has 16 GiB. So with `TrainingInstanceCount=auto` the start-training
step sizes each job from its manifest: the fewest instances over which the training shards
(`ShardedByS3Key`) leave every host within the instance's memory.
"""

from __future__ import annotations

import math
import re

from m5flow.exceptions import RunFailedError
from m5flow.manifest import ModelShards
from m5flow.notifications import Stage

GIB = 2**30
# A host's peak bytes per cell (row x column, label included) of the data it loads. The
# 1.7-1 container holds an Arrow table, its pandas copy, a contiguous copy of the features
# and the DMatrix while it loads Parquet; measured on a tenth of M5 (bench/memory): Parquet
# 19.0 bytes a cell at its peak, CSV through XGBoost's parser and hist training 14.5.
BYTES_PER_CELL = 20
HOST_BASE_BYTES = 300 * 2**20  # Python, XGBoost and pyarrow loaded, before any data
# What a host's data may take of the instance's memory: the rest is for the operating
# system, SageMaker's agents and the estimate's error.
USABLE_FRACTION = 0.8
MAX_INSTANCES = 20  # TrainingInstanceCount's bound in template.yaml
AUTO = "auto"

# GiB of memory per vCPU of the EC2 families (an ml.<family>.<size> type is its EC2 twin)
# whose sizes all share one ratio; a size has 2 vCPUs (large) or 4 per xlarge. Families
# whose ratio varies by size are not guessed at: t3's and c4's sizes are listed below,
# c5n's are not (auto refuses them; set a number).
_GIB_PER_VCPU = {
    **dict.fromkeys(("m4", "m5", "m5d", "m6i", "m7i", "g4dn", "g5"), 4.0),
    **dict.fromkeys(("c5", "c5d", "c6i", "c7i"), 2.0),
    **dict.fromkeys(("r5", "r5d", "r6i", "r7i"), 8.0),
    "p3": 7.625,
}
# The sizes SageMaker trains on of the families whose ratio varies (EC2's figures, GiB).
_GIB_OF_TYPE = {
    "ml.t3.medium": 4.0, "ml.t3.large": 8.0, "ml.t3.xlarge": 16.0, "ml.t3.2xlarge": 32.0,
    "ml.c4.xlarge": 7.5, "ml.c4.2xlarge": 15.0, "ml.c4.4xlarge": 30.0, "ml.c4.8xlarge": 60.0,
}  # fmt: skip
# Families with instance storage whose names do not end in "d" (m5d, c5d, r5d, p4d... do).
_LOCAL_STORAGE_FAMILIES = frozenset(
    ("g4dn", "g5", "g6", "g6e", "p3dn", "p4de", "p5", "p5e", "p5en", "trn1", "trn1n", "inf2")
)
_INSTANCE_TYPE = re.compile(r"ml\.(?P<family>[a-z0-9]+)\.(?:(?P<large>large)|(?P<n>\d*)xlarge)")


def instance_memory(instance_type: str) -> int | None:
    """Bytes of memory of a SageMaker instance type, or None for a type not in the table.

    Example
    -------
    >>> [instance_memory(t) // GIB for t in ("ml.m5.xlarge", "ml.c5.9xlarge", "ml.t3.medium")]
    [16, 72, 4]
    """
    if instance_type in _GIB_OF_TYPE:
        return int(_GIB_OF_TYPE[instance_type] * GIB)
    match = _INSTANCE_TYPE.fullmatch(instance_type)
    if match is None or match["family"] not in _GIB_PER_VCPU:
        return None
    vcpus = 2 if match["large"] else 4 * int(match["n"] or 1)
    return int(_GIB_PER_VCPU[match["family"]] * vcpus * GIB)


def has_local_storage(instance_type: str) -> bool:
    """Whether the type's volumes are local NVMe disks, which the instance encrypts with its
    own hardware: SageMaker then refuses a VolumeKmsKeyId (CreateTrainingJob's ResourceConfig,
    CreateTransformJob's TransformResources).

    Example
    -------
    >>> [has_local_storage(t) for t in ("ml.m5.xlarge", "ml.m5d.xlarge", "ml.g4dn.xlarge")]
    [False, True, True]
    """
    match = _INSTANCE_TYPE.fullmatch(instance_type)
    family = match["family"] if match else ""
    return family in _LOCAL_STORAGE_FAMILIES or bool(re.fullmatch(r"[a-z]+\d[a-z]*d", family))


def host_memory(model: ModelShards, hosts: int) -> int:
    """Bytes the busiest of `hosts` hosts needs at its peak to train `model`.

    `ShardedByS3Key` gives each host whole objects, about one in `hosts` of them, in an order
    SageMaker does not document: the estimate gives the busiest host the largest shards.
    Every host loads the whole validation channel, which is replicated.
    """
    cells_per_row = len(model.feature_names) + 1
    per_host = math.ceil(len(model.train) / hosts) if model.train else 0
    train_rows = sum(sorted((shard.rows for shard in model.train), reverse=True)[:per_host])
    validation_rows = sum(shard.rows for shard in model.validation)
    cells = (train_rows + validation_rows) * cells_per_row
    return HOST_BASE_BYTES + cells * BYTES_PER_CELL


def instances_needed(model: ModelShards, instance_type: str) -> int:
    """The fewest instances of `instance_type` that hold `model`'s training data (at most
    one per training shard and `MAX_INSTANCES`).

    Raises
    ------
    RunFailedError
        The type's memory is unknown, or even the most instances would not hold the data.
    """
    memory = instance_memory(instance_type)
    if memory is None:
        raise RunFailedError(
            Stage.START_TRAINING,
            f"TrainingInstanceCount={AUTO} cannot size {instance_type}: its memory is not in "
            "m5flow's table (layers/core/m5flow/instances.py); set TrainingInstanceCount to "
            "a number",
        )
    usable = memory * USABLE_FRACTION
    most = max(1, min(MAX_INSTANCES, len(model.train)))
    for hosts in range(1, most + 1):
        if host_memory(model, hosts) <= usable:
            return hosts
    raise RunFailedError(
        Stage.START_TRAINING,
        f"model {model.name} needs about {host_memory(model, most) / GIB:.1f} GiB on each of "
        f"{most} {instance_type} instance(s), the most it can be split over (one per "
        f"training shard, at most {MAX_INSTANCES}), and {instance_type} has "
        f"{memory / GIB:.0f} GiB: choose a TrainingInstanceType with more memory",
    )
