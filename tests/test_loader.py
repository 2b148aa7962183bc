"""pipelines.loader on hand-made exports of uneven shards: no Spark, no PyTorch."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.loader import ShardLoader
from tests.shards import make_export, row_hash

SIZES = [5, 17, 40, 3, 61, 0, 22]  # 148 rows; row groups of 7: many straddle lanes and windows
ROWS = sum(SIZES)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    make_export(tmp_path / "export", SIZES)
    return tmp_path / "export"


def loaders(export: Path | str, world: int, batch: int, **kwargs: Any) -> list[ShardLoader]:
    return [
        ShardLoader(str(export), batch_size=batch, rank=r, world_size=world, **kwargs)
        for r in range(world)
    ]


def global_order(ranks: list[ShardLoader], steps: int | None = None) -> list[int]:
    """The ids training sees, step by step, rank 0's batch first (as a gather would)."""
    steps_taken = zip(*(iter(loader) for loader in ranks), strict=True)
    order: list[int] = []
    for batches in itertools.islice(steps_taken, steps):
        for batch in batches:
            order.extend(batch["id"].tolist())
    return order


def test_every_rank_gets_equal_full_batches_and_each_row_once(export: Path) -> None:
    ranks = loaders(export, world=3, batch=4, num_workers=2, window_rows=8)
    per_rank = [list(loader) for loader in ranks]
    assert [len(batches) for batches in per_rank] == [ROWS // 12] * 3 == [len(r) for r in ranks]
    assert all(len(batch["id"]) == 4 for batches in per_rank for batch in batches)
    seen = Counter(int(i) for batches in per_rank for batch in batches for i in batch["id"])
    assert max(seen.values()) == 1
    assert len(seen) == ROWS // 12 * 12  # drop: fewer than one global batch left out
    hashes = {bytes(h) for batches in per_rank for batch in batches for h in batch["_content_hash"]}
    assert hashes == {row_hash(i) for i in seen}


def test_pad_sees_every_row_and_repeats_only_to_fill_the_last_step(export: Path) -> None:
    ranks = loaders(export, world=3, batch=4, remainder="pad")
    order = global_order(ranks)
    assert len(ranks[0]) == -(-ROWS // 12)
    assert len(order) == len(ranks[0]) * 12
    counts = Counter(order)
    assert set(counts) == set(range(ROWS))
    assert sum(c - 1 for c in counts.values()) == len(order) - ROWS


def test_the_order_is_seeded_new_each_epoch_and_the_same_on_a_rerun(export: Path) -> None:
    first = global_order(loaders(export, world=2, batch=5, seed=3, window_rows=10))
    again = global_order(loaders(export, world=2, batch=5, seed=3, window_rows=10))
    other_seed = global_order(loaders(export, world=2, batch=5, seed=4, window_rows=10))
    epoch_1 = loaders(export, world=2, batch=5, seed=3, window_rows=10)
    for loader in epoch_1:
        loader.set_epoch(1)
    assert first == again
    assert first != other_seed
    assert first != global_order(epoch_1)
    assert first != sorted(first)


def test_without_shuffle_rows_come_in_shard_order(export: Path) -> None:
    (loader,) = loaders(export, world=1, batch=4, shuffle=False)
    assert global_order([loader]) == list(range(ROWS // 4 * 4))


def test_a_finished_epoch_rolls_over_into_the_next(export: Path) -> None:
    (loader,) = loaders(export, world=1, batch=10)
    first = [int(i) for batch in loader for i in batch["id"]]
    second = [int(i) for batch in loader for i in batch["id"]]
    assert loader.epoch == 1
    assert first != second


def test_worker_shares_interleave_into_the_plain_order_and_only_advance_moves_it(
    export: Path,
) -> None:
    (plain,) = loaders(export, world=1, batch=4, num_workers=3, window_rows=8)
    expected = [batch["id"].tolist() for batch in plain]
    (loader,) = loaders(export, world=1, batch=4, num_workers=3, window_rows=8)
    for _ in range(5):
        loader.advance()
    first = loader.begin()
    shares = [list(loader.worker_batches(first, w, 3)) for w in range(3)]
    turns = itertools.chain.from_iterable(itertools.zip_longest(*shares))
    assert first == 5
    assert [batch["id"].tolist() for batch in turns if batch is not None] == expected[5:]
    assert loader.state_dict()["position"] == 5 * 4
    for _ in expected[5:]:
        loader.advance()
    assert (loader.begin(), loader.state_dict()["epoch"]) == (0, 1)


@pytest.mark.parametrize("stop", [0, 1, 5, 11])
def test_resume_from_a_state_gives_exactly_the_rest(export: Path, stop: int) -> None:
    whole = global_order(loaders(export, world=3, batch=4, seed=9, window_rows=8))
    ranks = loaders(export, world=3, batch=4, seed=9, window_rows=8)
    head = global_order(ranks, steps=stop)
    states = [json.loads(json.dumps(loader.state_dict())) for loader in ranks]
    assert all(state == states[0] for state in states)  # one state for all ranks
    resumed = loaders(export, world=3, batch=4, seed=9, window_rows=8)
    for loader in resumed:
        loader.load_state_dict(states[0])
    assert head + global_order(resumed) == whole


@pytest.mark.parametrize(("world", "batch"), [(2, 6), (4, 3), (1, 12), (6, 2)])
def test_resume_with_another_number_of_ranks_covers_the_rest_once(
    export: Path, world: int, batch: int
) -> None:
    whole = global_order(loaders(export, world=3, batch=4, num_workers=2, window_rows=8))
    ranks = loaders(export, world=3, batch=4, num_workers=2, window_rows=8)
    head = global_order(ranks, steps=4)
    state = ranks[0].state_dict()
    resumed = loaders(export, world=world, batch=batch)
    for loader in resumed:
        loader.load_state_dict(state)
    rest = global_order(resumed)
    assert len(set(len(loader) for loader in resumed)) == 1
    assert head + rest == whole  # the global order does not depend on the number of ranks


def test_a_state_with_another_global_batch_is_refused(export: Path) -> None:
    (loader,) = loaders(export, world=1, batch=4)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="global batch is 4 rows"):
        ShardLoader(str(export), batch_size=5, rank=0, world_size=1).load_state_dict(state)
    with pytest.raises(ValueError, match="seed=0"):
        ShardLoader(str(export), batch_size=4, seed=1).load_state_dict(state)


def test_columns_are_projected_and_hashes_are_uint8_rows(export: Path) -> None:
    (loader,) = loaders(export, world=1, batch=4, columns=["x", "_content_hash"])
    batch = next(iter(loader))
    assert sorted(batch) == ["_content_hash", "x"]
    assert batch["_content_hash"].dtype == np.uint8
    assert batch["_content_hash"].shape == (4, 16)
    ids = [round(x * 2) for x in batch["x"]]
    assert [bytes(h) for h in batch["_content_hash"]] == [row_hash(i) for i in ids]
    with pytest.raises(ValueError, match="unknown columns"):
        ShardLoader(str(export), batch_size=4, columns=["nope"])


def test_arrow_batches_match_numpy_batches(export: Path) -> None:
    (numpy_loader,) = loaders(export, world=1, batch=8, seed=2)
    (arrow_loader,) = loaders(export, world=1, batch=8, seed=2)
    ids = [int(i) for batch in numpy_loader for i in batch["id"]]
    assert ids == [i for table in arrow_loader.iter_arrow() for i in table["id"].to_pylist()]


def test_too_small_a_split_and_a_changed_shard_are_clear_errors(export: Path) -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardLoader(str(export), batch_size=100, rank=0, world_size=2)
    shard = export / "train" / "shard-00002.parquet"
    shard.write_bytes(shard.read_bytes() + b"x")
    (loader,) = loaders(export, world=1, batch=4)
    with pytest.raises(
        ValueError, match=r"shard-00002\.parquet: .* the shard changed since export"
    ):
        list(loader)


def test_the_state_is_small_json(export: Path) -> None:
    (loader,) = loaders(export, world=1, batch=4)
    next(iter(loader))
    text = json.dumps(loader.state_dict())
    assert len(text) < 600
    assert json.loads(text)["position"] == 4


@pytest.mark.s3
def test_reads_an_export_from_the_s3_server_as_from_disk(export: Path, s3: dict[str, str]) -> None:
    from pipelines.storage.s3 import s3_client

    client = s3_client()
    for path in sorted(export.rglob("*")):
        if path.is_file():
            key = f"{s3['prefix']}/export/{path.relative_to(export)}"
            client.put_object(Bucket="lake", Key=key, Body=path.read_bytes())
    remote = loaders(f"s3://lake/{s3['prefix']}/export", world=2, batch=6, seed=4)
    assert global_order(remote) == global_order(loaders(export, world=2, batch=6, seed=4))


def test_an_empty_split_is_an_empty_epoch(tmp_path: Path) -> None:
    make_export(tmp_path / "empty", [0, 0, 0])
    for remainder in ("drop", "pad"):
        loader = ShardLoader(
            str(tmp_path / "empty"), batch_size=4, world_size=2, rank=1, remainder=remainder
        )
        assert len(loader) == 0
        assert list(loader) == []
        state = loader.state_dict()
        loader.load_state_dict(state)
        assert list(loader) == []
