"""Seeded sample raw data with real mess, for the demo, tests and benchmarks.

``events`` (CSV) and ``clicks`` (JSON lines) files with duplicates inside and across files,
malformed lines, type errors, nulls in required columns, and compressed files (.gz, .zst).
The same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

KINDS = ("view", "cart", "buy", "refund")


@dataclass(frozen=True)
class SampleStats:
    """What the generator planted, so a demo or test can say what to expect."""

    files: int
    lines: int  # data records written, good and bad
    bad: int  # records the declared schema must refuse


def event_row(rng: random.Random, event_id: int) -> list[str]:
    day = date(2024, 1, 1) + timedelta(days=rng.randrange(7))
    tags = json.dumps(rng.sample(["new", "promo", "mobile", "gift"], rng.randrange(3)))
    amount = f"{rng.randrange(1, 50000) / 100:.2f}" if rng.random() < 0.9 else "NA"
    return [
        str(event_id),
        day.isoformat(),
        str(rng.randrange(1, 500)),
        rng.choice(KINDS),
        amount,
        tags,
    ]


def _csv_line(fields: list[str]) -> str:
    out = []
    for value in fields:
        if any(ch in value for ch in ',"\n'):
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return ",".join(out)


def write_events(folder: Path, seed: int = 7, files: int = 3, rows: int = 400) -> SampleStats:
    """CSV files for the ``events`` dataset; the last one gzip-compressed."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    header = "event_id,event_date,user_id,kind,amount,tags"
    previous: list[list[str]] = []
    lines = bad = 0
    next_id = 1
    for n in range(files):
        body: list[str] = []
        for _ in range(rows):
            roll = rng.random()
            if previous and roll < 0.05:  # re-delivered row from an earlier file or this one
                body.append(_csv_line(rng.choice(previous)))
            elif roll < 0.07:
                body.append(f"{next_id},2024-01-0{rng.randrange(1, 8)},oops,view,1.00,[]")
                bad += 1  # user_id is not a number
            elif roll < 0.085:
                body.append(f"{next_id},2024-01-03,12")  # truncated line
                bad += 1
            elif roll < 0.095:
                body.append(",2024-01-04,5,view,2.50,[]")  # missing required event_id
                bad += 1
            else:
                row = event_row(rng, next_id)
                previous.append(row)
                body.append(_csv_line(row))
            next_id += 1
            lines += 1
        text = header + "\n" + "\n".join(body) + "\n"
        name = f"events-{n:03d}.csv"
        if n == files - 1:
            (folder / (name + ".gz")).write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            (folder / name).write_text(text, encoding="utf-8")
    return SampleStats(files=files, lines=lines, bad=bad)


def write_clicks(folder: Path, seed: int = 11, files: int = 2, rows: int = 300) -> SampleStats:
    """JSON-lines files for the ``clicks`` dataset; the last one zstd-compressed."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    previous: list[str] = []
    lines = bad = 0
    for n in range(files):
        body: list[str] = []
        for i in range(rows):
            roll = rng.random()
            if previous and roll < 0.05:
                body.append(rng.choice(previous))
            elif roll < 0.065:
                body.append('{"click_id": "c-broken", "day": ')  # cut-off line
                bad += 1
            elif roll < 0.08:
                body.append(
                    json.dumps({"click_id": f"c{n}-{i}", "day": "2024-02-01", "position": "top"})
                )  # position is not an int
                bad += 1
            else:
                ts = datetime(2024, 2, 1) + timedelta(seconds=rng.randrange(86400 * 3))
                record = {
                    "click_id": f"c{n}-{i}",
                    "day": ts.date().isoformat(),
                    "ts": ts.isoformat() + "Z",
                    "url": rng.choice(["/", "/cart", "/item/42", "/search?q=caf\u00e9"]),
                    "position": rng.randrange(1, 20) if rng.random() < 0.9 else None,
                    "context": {
                        "device": rng.choice(["ios", "android", "web"]),
                        "ab_bucket": rng.randrange(4),
                    },
                }
                line = json.dumps(record, ensure_ascii=False)
                previous.append(line)
                body.append(line)
            lines += 1
        text = "\n".join(body) + "\n"
        name = f"clicks-{n:03d}.jsonl"
        if n == files - 1:
            data = pa.compress(text.encode(), codec="zstd", asbytes=True)
            (folder / (name + ".zst")).write_bytes(data)
        else:
            (folder / name).write_text(text, encoding="utf-8")
    return SampleStats(files=files, lines=lines, bad=bad)
