"""Loader throughput: ShardLoader against a plain pyarrow scan and HF ``datasets``, one run.

    python bench/loader.py [--rows 1000000] [--batch-size 256] [--rounds 5] [--where local,s3]

Builds a training-like export as a user would (generated Parquet input, ``lakeshard ingest``,
``lakeshard export``; kept in ``--out`` and reused by later runs), then times full passes over its
``train`` split, from local disk and from a SeaweedFS S3 server started on loopback for the run:

* (a) **pyarrow scan**, the limit: the same shard files in file order, no shuffle, each row
  group converted once and cut into batches that are views of its arrays. Two plain ways are
  timed, ``ParquetFile.read_row_group`` one after the other and ``pyarrow.dataset``'s scanner
  (which reads ahead on its threads); the faster one at each place is (a);
* ``pyarrow per-batch`` (reference): the same row groups converted batch by batch, as the loader
  and HF datasets do;
* **loader**: ``ShardLoader(...)`` iterated as a trainer does without a DataLoader, with
  ``shuffle=True`` (its normal mode) and, for reference, ``shuffle=False``;
* (b) **hf datasets**: ``load_dataset("parquet", data_files=..., streaming=True)`` (S3 through
  s3fs) ``.iter(batch_size=...)``, no shuffle, two ways: ``with_format("arrow")`` and then the
  loader's own conversion (HF's fastest way to the same arrays, which flatters it), and
  ``with_format("numpy")``, HF's own NumPy batches (other dtypes: ``<U`` text, ``S16`` hashes;
  left out of the same-output check below).

Every consumer but HF's numpy format reads the same columns and yields the same thing per
batch: a dict of NumPy arrays as ``pipelines.loader.to_numpy`` makes them (numbers as numeric
arrays, text as an object array of ``str``, ``_content_hash`` as a ``(rows, 16)`` uint8 array);
the first batches are compared.
samples/s counts rows yielded (the loader drops the last partial batch); MB/s is rows yielded
times the split's mean uncompressed Arrow bytes per row, 1 MB = 10^6 bytes. Caches are warm: an
untimed pass reads every file first (page cache; the S3 server's), and each consumer's first
batch is taken untimed. Rounds run the consumers in turn, so a slow spell of this shared machine
hits all of them; the median round is reported, with CPU seconds of the process (all threads).
The ratios are the loader's samples/s over (a)'s and (b)'s (goals: >= 0.8x and >= 1.5x), and in
brackets the same from CPU time per row (for (a): the scan that used the least CPU). Compare
ratios, not throughputs: these machines are noisy, and on S3 the server shares the machine's
cores with the reader.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.s3 import server as s3_server  # noqa: E402
from pipelines.loader import ShardLoader, to_numpy  # noqa: E402
from pipelines.loader.manifest import MANIFEST, Manifest  # noqa: E402
from pipelines.storage import arrowfs  # noqa: E402

DATASET = "samples"
FEATURES = [f"f{i:02d}" for i in range(16)]
COLUMNS = ["sample_id", "label", *FEATURES, "text", "_content_hash"]
GOAL_SCAN, GOAL_HF = 0.8, 1.5
INPUT_FILES = 4


# --- the export ------------------------------------------------------------------------------


def declare(schemas: Path) -> None:
    """The ``samples`` dataset: Parquet input, an id, a label, 16 float features, a text."""
    folder = schemas / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.yaml").write_text("format: parquet\n")
    columns = [
        "  - {name: sample_id, type: long, nullable: false}\n",
        "  - {name: label, type: int, nullable: false}\n",
        *[f"  - {{name: {name}, type: float, nullable: false}}\n" for name in FEATURES],
        "  - {name: text, type: string, nullable: false}\n",
    ]
    (folder / "v1.yaml").write_text("columns:\n" + "".join(columns))


def generate(raw: Path, rows: int, seed: int = 7) -> None:
    """``rows`` training rows in ``INPUT_FILES`` Parquet files: texts of 100-300 characters
    cut from a corpus of made-up words (so they compress about as text does)."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    odds = np.linspace(2.0, 0.2, len(letters))
    words = [
        "".join(rng.choice(letters, size=int(n), p=odds / odds.sum()))
        for n in rng.integers(2, 10, 4000)
    ]
    corpus = " ".join(rng.choice(words, size=2_000_000))
    per_file = -(-rows // INPUT_FILES)
    for index in range(INPUT_FILES):
        first = index * per_file
        n = max(0, min(per_file, rows - first))
        starts = rng.integers(0, len(corpus) - 300, n)
        lengths = rng.integers(100, 301, n)
        table = pa.table(
            {
                "sample_id": pa.array(np.arange(first, first + n), pa.int64()),
                "label": pa.array(rng.integers(0, 10, n), pa.int32()),
                **{name: pa.array(rng.standard_normal(n, dtype=np.float32)) for name in FEATURES},
                "text": pa.array(
                    [corpus[s : s + length] for s, length in zip(starts, lengths, strict=True)]
                ),
            }
        )
        pq.write_table(table, raw / f"part-{index:03d}.parquet", compression="zstd")


def lakeshard(*args: str) -> dict[str, Any]:
    """``lakeshard ARGS --json`` as a separate process, as a user runs it; its summary."""
    command = [sys.executable, "-m", "pipelines", *args, "--json"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{' '.join(command[2:])} exited {done.returncode}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def exported(work: Path, rows: int, shards: int) -> Path:
    """The export of ``rows`` generated rows in ``work``, built once and reused; its folder."""
    out = work / "export"
    if (out / MANIFEST).exists():
        return out
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    declare(work / "schemas")
    generate(work / "raw", rows)
    where = ["--lake", str(work / "lake"), "--schemas", str(work / "schemas")]
    ingest = lakeshard("ingest", DATASET, str(work / "raw"), *where)
    if ingest["rows_written"] != rows:
        raise SystemExit(f"ingest wrote {ingest['rows_written']} rows, expected {rows}")
    export = lakeshard("export", DATASET, "--shards", str(shards), "--out", str(out), *where)
    print(
        f"built the export: {rows:,} rows ingested and exported as {shards} shards in "
        f"{time.monotonic() - started:.0f}s ({export['bytes'] / 1e6:.0f} MB of Parquet, "
        f"row groups of {export['row_group_rows']:,} rows)",
        file=sys.stderr,
        flush=True,
    )
    for scratch in ("raw", "lake"):  # the export is all the bench reads
        shutil.rmtree(work / scratch)
    return out


# --- the consumers ---------------------------------------------------------------------------

Batches = Generator[dict[str, np.ndarray], None, None]


class Place:
    """Where the export is read from: its folder URI, the shard files and their filesystem."""

    def __init__(self, name: str, uri: str, manifest: Manifest) -> None:
        self.name, self.uri = name, uri
        self.fs, root = arrowfs.filesystem(uri)
        self.paths = [f"{root}/{shard.path}" for shard in manifest.split("train").shards]
        self.hf_files = [f"{uri}/{shard.path}" for shard in manifest.split("train").shards]
        self.storage_options: dict[str, Any] | None = None
        if uri.startswith("s3://"):
            self.storage_options = {
                "key": os.environ["AWS_ACCESS_KEY_ID"],
                "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
                "endpoint_url": os.environ["AWS_ENDPOINT_URL"],
                "client_kwargs": {"region_name": os.environ["AWS_REGION"]},
            }


def row_groups(place: Place) -> Iterator[pa.Table]:
    """Each shard's row groups in file order, read whole (columns decoded on pyarrow's threads;
    on S3 each row group's column chunks come in coalesced ranged reads)."""
    for path in place.paths:
        shard = pq.ParquetFile(place.fs.open_input_file(path), pre_buffer=True)
        for group in range(shard.num_row_groups):
            yield shard.read_row_group(group, columns=COLUMNS)


def views(table: pa.Table, batch_size: int) -> Batches:
    """A table converted once, then cut into batches that are views of its arrays."""
    arrays = to_numpy(table)
    for start in range(0, table.num_rows, batch_size):
        yield {name: values[start : start + batch_size] for name, values in arrays.items()}


def pyarrow_row_groups(place: Place, batch_size: int) -> Callable[[], Batches]:
    """Plain pyarrow, one row group after the other, each converted once."""

    def batches() -> Batches:
        for table in row_groups(place):
            yield from views(table, batch_size)

    return batches


def pyarrow_dataset(place: Place, batch_size: int) -> Callable[[], Batches]:
    """Plain pyarrow's dataset scanner (it reads ahead on its own threads), each record batch
    (a row group here) converted once."""

    def batches() -> Batches:
        dataset = pads.dataset(place.paths, format="parquet", filesystem=place.fs)
        for batch in dataset.to_batches(columns=COLUMNS):
            yield from views(pa.Table.from_batches([batch]), batch_size)

    return batches


def pyarrow_per_batch(place: Place, batch_size: int) -> Callable[[], Batches]:
    """Row groups as in ``pyarrow_row_groups``, converted batch by batch as the loader and HF
    datasets do (for reference: what converting per batch costs)."""

    def batches() -> Batches:
        for table in row_groups(place):
            for start in range(0, table.num_rows, batch_size):
                yield to_numpy(table.slice(start, batch_size))

    return batches


def shard_loader(place: Place, batch_size: int, shuffle: bool, seed: int) -> Callable[[], Batches]:
    """``ShardLoader`` as a trainer iterates it (one rank, no DataLoader)."""
    loader = ShardLoader(place.uri, batch_size, columns=COLUMNS, shuffle=shuffle, seed=seed)

    def batches() -> Batches:
        yield from loader

    return batches


def hf_streaming(
    place: Place, batch_size: int, numpy_format: bool = False
) -> Callable[[], Batches]:
    """HF ``datasets`` streaming the same files: as Arrow batches then the loader's own
    conversion (HF's fastest path), or with HF's own NumPy format (its dtypes differ: fixed-width
    ``<U`` text, ``S16`` hashes, so it is left out of the same-output check)."""
    from datasets import load_dataset  # type: ignore[import-untyped]

    dataset = load_dataset(
        "parquet",
        data_files={"train": place.hf_files},
        split="train",
        streaming=True,
        columns=COLUMNS,
        storage_options=place.storage_options,
    ).with_format("numpy" if numpy_format else "arrow")

    def batches() -> Batches:
        for table in dataset.iter(batch_size=batch_size):
            yield table if numpy_format else to_numpy(table)

    return batches


# --- timing ----------------------------------------------------------------------------------

SCANS = ("pyarrow row groups", "pyarrow dataset")  # (a) is the faster of the two, per place
CONSUMERS = (
    *SCANS,
    "pyarrow per-batch",
    "loader shuffle",
    "loader no shuffle",
    "hf datasets",
    "hf datasets numpy",
)
SAME_OUTPUT = tuple(name for name in CONSUMERS if name != "hf datasets numpy")


def consumer(name: str, place: Place, batch_size: int, seed: int) -> Callable[[], Batches]:
    if name == "pyarrow row groups":
        return pyarrow_row_groups(place, batch_size)
    if name == "pyarrow dataset":
        return pyarrow_dataset(place, batch_size)
    if name == "pyarrow per-batch":
        return pyarrow_per_batch(place, batch_size)
    if name == "hf datasets":
        return hf_streaming(place, batch_size)
    if name == "hf datasets numpy":
        return hf_streaming(place, batch_size, numpy_format=True)
    return shard_loader(place, batch_size, shuffle=name == "loader shuffle", seed=seed)


class Pass(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # CPU seconds of this process, all its threads
    rows: int


def one_pass(batches: Callable[[], Batches]) -> Pass:
    """One full pass: its wall and CPU time and the rows it yielded."""
    rows = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches():
        rows += len(batch["sample_id"])
    return Pass(time.perf_counter() - wall, time.process_time() - cpu, rows)


def shape_of(batch: dict[str, np.ndarray]) -> list[tuple[str, str, tuple[int, ...]]]:
    """What a batch is made of: column, dtype and shape (rows left out)."""
    return [(name, str(values.dtype), values.shape[1:]) for name, values in batch.items()]


def check_alike(place: Place, batch_size: int) -> None:
    """Every consumer's first batch (taken untimed: it also warms each one up) has the same
    columns, dtypes and shapes, and as many rows."""
    shapes = {}
    for name in SAME_OUTPUT:
        batches = consumer(name, place, batch_size, 0)()
        first = next(batches)
        batches.close()  # stops the loader's prefetch thread
        shapes[name] = (len(first["sample_id"]), shape_of(first))
    reference = shapes[CONSUMERS[0]]
    for name, shape in shapes.items():
        if shape != reference:
            raise SystemExit(f"{place.name}: {name} yields {shape}, {CONSUMERS[0]} {reference}")


def arrow_bytes(place: Place) -> int:
    """Uncompressed Arrow bytes of the split's columns (one untimed pass, which also warms the
    page cache for local files and the server's for S3)."""
    return sum(table.nbytes for table in row_groups(place))


def measure(place: Place, batch_size: int, rounds: int) -> dict[str, list[Pass]]:
    """``rounds`` passes of every consumer, taken in turn."""
    check_alike(place, batch_size)
    passes: dict[str, list[Pass]] = {name: [] for name in CONSUMERS}
    for round_number in range(rounds):
        for name in CONSUMERS:
            done = one_pass(consumer(name, place, batch_size, seed=round_number))
            passes[name].append(done)
            print(
                f"  {place.name} round {round_number + 1}/{rounds}: {name}: {done.rows:,} rows "
                f"in {done.seconds:.2f}s ({done.cpu:.2f} CPU s)",
                file=sys.stderr,
                flush=True,
            )
    return passes


def summarise(place: str, passes: dict[str, list[Pass]], row_bytes: float) -> list[dict[str, Any]]:
    """Per consumer: the median pass's rates, the spread, the median CPU time."""
    out = []
    for name, runs in passes.items():
        seconds = [run.seconds for run in runs]
        rows, median = runs[0].rows, statistics.median(seconds)
        out.append(
            {
                "where": place,
                "consumer": name,
                "rows": rows,
                "samples_per_s": round(rows / median),
                "mb_per_s": round(rows * row_bytes / median / 1e6, 1),
                "s_median": round(median, 2),
                "s_min": round(min(seconds), 2),
                "s_max": round(max(seconds), 2),
                "cpu_s_median": round(statistics.median(run.cpu for run in runs), 2),
            }
        )
    return out


def s3_copy(export: Path, state: Path) -> str:
    """Start an S3 server, upload the export to it; its URI there. Sets the AWS variables."""
    info = s3_server.start(state, ["bench"], os.environ.get("LAKESHARD_S3_SERVER", "seaweedfs"))
    for key in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        os.environ.pop(key, None)
    os.environ.update(info)
    fs, target = arrowfs.filesystem("s3://bench/export")
    pafs.copy_files(
        str(export), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
    return "s3://bench/export"


def speedup(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[float, float]:
    """How many times faster ``ours`` is: by samples/s, and by CPU seconds per row."""
    by_rate = ours["samples_per_s"] / theirs["samples_per_s"]
    by_cpu = (theirs["cpu_s_median"] / theirs["rows"]) / (ours["cpu_s_median"] / ours["rows"])
    return float(by_rate), float(by_cpu)


def report(
    results: list[dict[str, Any]], places: list[str], header: str
) -> dict[str, dict[str, float]]:
    """The table and the ratios block; the ratios."""
    print(header)
    print(
        f"{'where':6} {'consumer':18} {'samples/s':>10} {'MB/s':>7} {'s/pass (min-max)':>18} "
        f"{'CPU s/pass':>10}"
    )
    for r in results:
        spread = f"{r['s_median']:.2f} ({r['s_min']:.2f}-{r['s_max']:.2f})"
        print(
            f"{r['where']:6} {r['consumer']:18} {r['samples_per_s']:>10,} {r['mb_per_s']:>7.1f} "
            f"{spread:>18} {r['cpu_s_median']:>10.2f}"
        )
    print(
        "ratios (loader samples/s over the baseline's, median passes; in brackets: from CPU "
        "seconds per row, all threads, against the scan that used the least):"
    )
    ratios = {}
    for where in places:
        rows = {r["consumer"]: r for r in results if r["where"] == where}
        limit = max(SCANS, key=lambda name: rows[name]["samples_per_s"])
        frugal = min(SCANS, key=lambda name: rows[name]["cpu_s_median"] / rows[name]["rows"])
        print(f"  {where}: pyarrow scan = {limit} (the faster there); by CPU: {frugal}")
        for loader in ("loader shuffle", "loader no shuffle"):
            scan = speedup(rows[loader], rows[limit])[0]
            scan_cpu = speedup(rows[loader], rows[frugal])[1]
            hf, hf_cpu = speedup(rows[loader], rows["hf datasets"])
            hf_np, hf_np_cpu = speedup(rows[loader], rows["hf datasets numpy"])
            ratios[f"{where} {loader}"] = {
                "vs_scan": round(scan, 2),
                "vs_hf": round(hf, 2),
                "vs_hf_numpy": round(hf_np, 2),
                "vs_scan_cpu": round(scan_cpu, 2),
                "vs_hf_cpu": round(hf_cpu, 2),
                "vs_hf_numpy_cpu": round(hf_np_cpu, 2),
            }
            print(
                f"  {where:5} {loader:17}: {scan:.2f}x [{scan_cpu:.2f}x] of pyarrow scan "
                f"(goal >= {GOAL_SCAN}x: {'met' if scan >= GOAL_SCAN else 'NOT met'}); "
                f"of hf datasets (goal >= {GOAL_HF}x): {hf:.2f}x [{hf_cpu:.2f}x] of its Arrow "
                f"batches + our conversion ({'met' if hf >= GOAL_HF else 'NOT met'}), "
                f"{hf_np:.2f}x [{hf_np_cpu:.2f}x] of its numpy format "
                f"({'met' if hf_np >= GOAL_HF else 'NOT met'})"
            )
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the built export")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="passes per consumer and place")
    parser.add_argument("--where", default="local,s3", help="local, s3 or both (comma-separated)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "loader")
    args = parser.parse_args()
    places = args.where.split(",")

    export = exported(args.out / f"rows-{args.rows}", args.rows, args.shards)
    manifest = Manifest.from_json((export / MANIFEST).read_bytes())
    split = manifest.split("train")
    parquet_bytes = sum(shard.bytes for shard in split.shards)
    load_before = os.getloadavg()[0]
    results: list[dict[str, Any]] = []
    row_bytes = 0.0
    state = args.out / "s3"
    for where in places:
        if where == "local":
            place = Place("local", str(export), manifest)
        else:
            shutil.rmtree(state, ignore_errors=True)
            place = Place("s3", s3_copy(export, state), manifest)
        try:
            row_bytes = arrow_bytes(place) / split.rows
            results += summarise(where, measure(place, args.batch_size, args.rounds), row_bytes)
        finally:
            if where != "local":
                s3_server.stop(state)
                shutil.rmtree(state, ignore_errors=True)

    header = (
        f"loader bench: {split.rows:,} rows, {len(split.shards)} shards "
        f"({parquet_bytes / 1e6:.0f} MB Parquet zstd, {row_bytes * split.rows / 1e6:.0f} MB as "
        f"Arrow, {row_bytes:.0f} B/row); batch {args.batch_size}; {len(COLUMNS)} columns "
        "(sample_id, label, f00-f15 float32, text, _content_hash), each batch a dict of NumPy "
        f"arrays; median of {args.rounds} rounds, warm caches; MB = uncompressed Arrow bytes "
        f"yielded; {os.cpu_count()} cores, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    ratios = report(results, places, header)
    print(
        json.dumps(
            {
                "bench": "loader",
                "rows": split.rows,
                "shards": len(split.shards),
                "parquet_bytes": parquet_bytes,
                "arrow_bytes_per_row": round(row_bytes, 1),
                "batch_size": args.batch_size,
                "rounds": args.rounds,
                "results": results,
                "ratios": ratios,
                "goals": {"vs_scan": GOAL_SCAN, "vs_hf": GOAL_HF},
                "cores": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
