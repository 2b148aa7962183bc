"""Is a dataset's part of the lake whole? Checked by every command before it reads or writes.

A damaged object gets one line that names it and says what to do (:class:`DamagedLake`, exit
1), never a wrong answer computed from what is left:

* a table's Delta log that a reader cannot replay: a commit missing or truncated, a corrupt
  newest checkpoint (:func:`pipelines.lake.deltalog.check_log`);
* a quarantine, file ledger or run log missing beside a table that holds data. The first run
  creates all four before it writes anything, so only a deletion explains it. Without the
  ledger every source file would be read again; without the run log no run is accounted for;
* a data file the table's latest version reads that is gone from storage (deleted behind
  Delta's back): a run would otherwise work on a table that silently lacks those rows. (Tables
  whose files only Delta can resolve, such as column-mapped ones, are left to Delta's reader.)

Cost: one listing and one read of the newest commit per table, the newest checkpoint's footer,
the table's live files replayed from its log, and one recursive listing of the table's folder
(on S3, one request per 1,000 files).
"""

from __future__ import annotations

import pyarrow.fs as pafs

from pipelines.config import Config
from pipelines.errors import DamagedLake, StorageError, first_line
from pipelines.lake import deltalog
from pipelines.storage import arrowfs

RESTORE = "restore it from a backup or an earlier object version"


def check(settings: Config, dataset: str) -> None:
    """Raise DamagedLake naming the first damaged object of ``dataset``; None: all whole."""
    table = settings.table_uri(dataset)
    # Replaying the live files reads the whole log since the newest checkpoint (and that
    # checkpoint): what check_log checks, in the same pass. Tables it declines (column mapping,
    # deletion vectors, V2 checkpoints) get check_log instead.
    live = deltalog.data_files(table)
    version = live.version if live is not None else deltalog.check_log(table)
    beside = {
        "quarantine": settings.quarantine_uri(dataset),
        "file ledger": settings.ledger_uri(dataset),
        "run log": settings.runs_uri(dataset),
    }
    for what, uri in beside.items():
        if deltalog.check_log(uri) is None and version is not None and version > 0:
            raise DamagedLake(
                f"the {what} of {dataset} is missing ({uri}) while its table holds data "
                f"(version {version}): {RESTORE}; lakeshard does not recreate it, since "
                f"{_without(what)}"
            )
    if live is not None:
        check_data_files(table, live)


def _without(what: str) -> str:
    return {
        "quarantine": "the rows it held would be lost from the accounting",
        "file ledger": "every source file would then be read again",
        "run log": "no run would be accounted for",
    }[what]


def check_data_files(uri: str, live: deltalog.DataFiles) -> None:
    """Every file the table's latest version reads (``live``, from its log) is in storage."""
    if not live.files:
        return
    _, root = arrowfs.filesystem(uri)
    try:
        listed = live.fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as exc:
        raise StorageError(
            f"storage failed listing the data files of {uri}: {first_line(exc)}"
        ) from None
    present = {info.path for info in listed if info.type == pafs.FileType.File}
    missing = [f.path for f in live.files if f.path not in present]
    if missing:
        first = missing[0].removeprefix(root.rstrip("/") + "/")
        raise DamagedLake(
            f"{len(missing)} data file(s) of {uri} at version {live.version} are missing from "
            f"storage (e.g. {first}): {RESTORE}; or, if they are lost, remove them from the "
            f"table with Delta's FSCK REPAIR TABLE and ingest their sources again"
        )
