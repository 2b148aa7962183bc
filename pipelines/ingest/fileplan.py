"""Which listed files a run reads: the ledger lookup, file inspection results, and the plan."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipelines.errors import StorageError
from pipelines.ingest.inspection import Inspection
from pipelines.ingest.layout import Layout
from pipelines.lake.ledger import DUPLICATE, INGESTED, REJECTED, Entry, Known
from pipelines.storage.listing import SourceFile


@dataclass
class FilePlan:
    take: list[SourceFile] = field(default_factory=list)  # to read in this run
    entries: list[Entry] = field(default_factory=list)  # new ledger entries for this run
    unchanged: int = 0  # already in the ledger, exactly as listed: not even opened
    duplicates: int = 0  # same bytes as a file already ingested
    rejected: list[Entry] = field(default_factory=list)
    layouts: dict[str, Layout] = field(default_factory=dict)  # of the text files taken

    @property
    def skipped(self) -> int:
        return self.unchanged + self.duplicates


def plan(
    files: Iterable[SourceFile],
    known: Known,
    inspect: Callable[[list[SourceFile]], list[Inspection]],
    on_changed_file: str,
    run_id: str,
) -> FilePlan:
    """Decide, for each listed file, whether this run reads it; only new paths are opened."""
    result = FilePlan()
    candidates: list[SourceFile] = []
    for source in files:
        prior = known.by_path.get(source.uri)
        unreadable = prior is not None and prior.file_hash is None  # may be readable now
        same = prior and (prior.size, prior.modified_ms) == (source.size, source.modified_ms)
        if same and not unreadable:
            result.unchanged += 1
        elif source.problem:
            result.rejected.append(_entry(source, None, REJECTED, source.problem, run_id))
        else:
            candidates.append(source)
    inspections = {i.uri: i for i in inspect(candidates)} if candidates else {}
    unread = [i for i in inspections.values() if i.storage_error is not None]
    if unread:
        more = f" (and {len(unread) - 1} more file(s))" if len(unread) > 1 else ""
        raise StorageError(
            f"storage failed reading source {unread[0].uri}{more}: {unread[0].storage_error}"
        )
    for source in candidates:
        inspection = inspections[source.uri]
        digest = inspection.file_hash
        prior = known.by_path.get(source.uri)
        if inspection.problem:
            result.rejected.append(_entry(source, digest, REJECTED, inspection.problem, run_id))
            continue
        first = known.ingested.get(digest) if digest is not None else None
        if first is not None:
            reason = f"same bytes as {first.path} (ingested by run {first.run_id})"
            result.entries.append(_entry(source, digest, DUPLICATE, reason, run_id))
            result.duplicates += 1
            continue
        if prior and prior.outcome == INGESTED and on_changed_file == "reject":
            reason = (
                f"changed since run {prior.run_id} ingested it "
                "(on_changed_file: reject; set reingest to read it again)"
            )
            result.rejected.append(_entry(source, digest, REJECTED, reason, run_id))
            continue
        entry = _entry(source, digest, INGESTED, None, run_id)
        known.add(entry)  # a second copy later in this listing is a duplicate of this one
        result.entries.append(entry)
        result.take.append(source)
        if inspection.layout is not None:
            result.layouts[source.uri] = inspection.layout
    result.entries.extend(result.rejected)
    return result


def _entry(
    source: SourceFile, digest: bytes | None, outcome: str, reason: str | None, run_id: str
) -> Entry:
    return Entry(source.uri, source.size, source.modified_ms, digest, outcome, reason, run_id)
