"""Training instances sized from the manifest: memory by type, the busiest host's share."""

from __future__ import annotations

import pytest

from m5flow.exceptions import RunFailedError
from m5flow.instances import (
    GIB,
    USABLE_FRACTION,
    has_local_storage,
    host_memory,
    instance_memory,
    instances_needed,
)
from m5flow.manifest import ModelShards, ShardInfo

# Items per department in M5; each store x department is one training shard of the h7 model.
M5_DEPARTMENTS = {"FOODS_1": 216, "FOODS_2": 398, "FOODS_3": 823, "HOBBIES_1": 416,
                  "HOBBIES_2": 149, "HOUSEHOLD_1": 532, "HOUSEHOLD_2": 515}  # fmt: skip
STORES = 10
TRAIN_ROWS_PER_SERIES = 1509  # the full-scale run: 46.0 M rows over 30,490 series


def _model(train_rows: list[int], validation_rows: int, features: int = 33) -> ModelShards:
    def shard(index: int, rows: int) -> ShardInfo:
        return ShardInfo(f"runs/r/train/h7/{index:03d}.parquet", rows, rows * 50)

    return ModelShards(
        "h7", 7, (1, 7), [f"f{i}" for i in range(features)],
        train=[shard(i, rows) for i, rows in enumerate(train_rows)],
        validation=[shard(999, validation_rows)] if validation_rows else [],
    )  # fmt: skip


def _full_m5() -> ModelShards:
    items = [count for count in M5_DEPARTMENTS.values() for _ in range(STORES)]
    series = sum(items)
    assert series == 30_490
    return _model([n * TRAIN_ROWS_PER_SERIES for n in items], series * 28)


@pytest.mark.parametrize(
    ("instance_type", "gib"),
    [("ml.m5.large", 8), ("ml.m5.xlarge", 16), ("ml.m5.24xlarge", 384),
     ("ml.m4.10xlarge", 160), ("ml.m4.16xlarge", 256), ("ml.c5.xlarge", 8),
     ("ml.c5.9xlarge", 72), ("ml.c5.18xlarge", 144), ("ml.r5.large", 16),
     ("ml.r5.12xlarge", 384), ("ml.g4dn.12xlarge", 192), ("ml.g5.48xlarge", 768),
     ("ml.p3.2xlarge", 61), ("ml.p3.16xlarge", 488), ("ml.m6i.32xlarge", 512)],
)  # fmt: skip
def test_memory_of_instance_types_is_their_ec2_twins(instance_type, gib):
    assert instance_memory(instance_type) == gib * GIB


@pytest.mark.parametrize(
    "instance_type",
    # c5n's memory per vCPU varies by size, and is not listed
    ["ml.c5n.xlarge", "ml.c4.large", "m5.xlarge", "ml.m5.metal", "ml.m5.xlarg"],
)
def test_types_whose_memory_is_not_known_are_not_guessed(instance_type):
    assert instance_memory(instance_type) is None


@pytest.mark.parametrize(
    ("instance_type", "gib"),
    # Families whose ratio varies: their training sizes are listed, not derived.
    [("ml.t3.medium", 4), ("ml.t3.2xlarge", 32), ("ml.c4.xlarge", 7.5), ("ml.c4.8xlarge", 60)],
)
def test_listed_sizes_of_families_whose_ratio_varies(instance_type, gib):
    assert instance_memory(instance_type) == gib * GIB


def test_small_data_trains_on_one_instance():
    assert instances_needed(_model([20_000, 30_000], 2_000), "ml.m5.xlarge") == 1


def test_full_m5_is_split_until_the_busiest_host_fits_an_ml_m5_xlarge():
    model = _full_m5()
    usable = 16 * GIB * USABLE_FRACTION
    # One host would need about 30 GiB: the out-of-memory exit the default used to get.
    assert host_memory(model, 1) > 28 * GIB
    hosts = instances_needed(model, "ml.m5.xlarge")
    assert 1 < hosts <= 6
    assert host_memory(model, hosts) <= usable < host_memory(model, hosts - 1)
    # One instance with four times the memory holds it all.
    assert instances_needed(model, "ml.m5.4xlarge") == 1


def test_the_busiest_host_is_given_the_largest_shards_and_the_whole_validation():
    small = _model([100, 100, 100, 100], 0, features=9)
    skewed = _model([1_000, 100, 100, 100], 0, features=9)
    with_validation = _model([1_000, 100, 100, 100], 500, features=9)
    # two hosts: two objects each; the skewed busiest host holds 1,100 rows of 10 cells
    assert host_memory(skewed, 2) - host_memory(small, 2) == 900 * 10 * 20
    assert host_memory(with_validation, 2) - host_memory(skewed, 2) == 500 * 10 * 20
    assert host_memory(skewed, 4) < host_memory(skewed, 2) < host_memory(skewed, 1)


def test_data_no_count_of_the_type_holds_is_refused_with_what_to_change():
    one_huge_shard = _model([60_000_000], 0)  # ShardedByS3Key cannot split one object
    with pytest.raises(RunFailedError) as caught:
        instances_needed(one_huge_shard, "ml.m5.xlarge")
    assert caught.value.stage == "start_training"
    assert "model h7 needs about" in caught.value.reason
    assert "1 ml.m5.xlarge instance(s)" in caught.value.reason
    assert "choose a TrainingInstanceType with more memory" in caught.value.reason
    assert instances_needed(one_huge_shard, "ml.r5.12xlarge") == 1


def test_auto_cannot_size_an_unknown_type_and_says_to_set_a_number():
    with pytest.raises(RunFailedError, match=r"cannot size ml\.c5n\.xlarge.*to a number"):
        instances_needed(_model([10], 0), "ml.c5n.xlarge")


@pytest.mark.parametrize(
    ("instance_type", "local"),
    [("ml.m5.xlarge", False), ("ml.p3.2xlarge", False), ("ml.c5n.xlarge", False),
     ("ml.m5d.large", True), ("ml.c5d.9xlarge", True), ("ml.r5d.xlarge", True),
     ("ml.m6id.xlarge", True), ("ml.m5ad.xlarge", True), ("ml.p4d.24xlarge", True),
     ("ml.g4dn.xlarge", True), ("ml.g5.2xlarge", True), ("ml.p3dn.24xlarge", True),
     ("ml.p4de.24xlarge", True), ("ml.p5en.48xlarge", True)],
)  # fmt: skip
def test_types_with_instance_storage_are_known(instance_type, local):
    assert has_local_storage(instance_type) is local


def test_shards_that_do_not_split_evenly_load_the_busiest_host_with_the_extra_one():
    """3 equal shards on 2 hosts: one host holds 2 of them, not 1.5 (the estimate's ceil)."""
    model = _model([1000, 1000, 1000], 0, features=9)
    assert host_memory(model, 2) == host_memory(_model([1000, 1000], 0, features=9), 1)
