"""An exclusive, expiring lease on one dataset, kept in the lake (a local folder or S3).

Every run that writes a dataset's tables holds its lease, so each table has one writer at a
time (Delta on S3 is only safe with one writing driver per table).

Design: a lease is a numbered claim, ``<lake>/_lakeshard/leases/<dataset>/<generation>.json``.
The highest generation is the current claim. To take the lease a run creates the next
generation *only if it does not exist* — ``os.link`` of a complete file on a local folder,
``PUT`` with ``If-None-Match: *`` on S3 — so of two runs racing for the same generation exactly
one wins. A claim names its run, host and process and an expiry time that the holder extends
from a background thread (a heartbeat). A claim is dead when it has expired, was released, or
names a process on this host that no longer exists; the next run then claims the generation
above it, which is how a lease left by a crashed run is taken over safely.

Before committing anything the holder checks that its claim is still the highest and unexpired
(:meth:`Lease.check`); a holder whose heartbeat failed for longer than the lease's time to live
stops. Some S3 emulators accept ``If-None-Match`` and ignore it: :func:`acquire` probes the
store once and refuses to run unguarded where the condition is not enforced.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from pipelines.errors import (
    ConfigError,
    PolicyError,
    StorageError,
    Terminated,
    first_line,
    raise_if_stopped,
)
from pipelines.storage.exclusive import create_local, put_if_absent


class Store(Protocol):
    """The few operations a lease needs from where it is kept."""

    where: str

    def generations(self) -> list[int]: ...
    def read(self, generation: int) -> dict[str, Any] | None: ...
    def create(self, generation: int, claim: dict[str, Any]) -> bool: ...
    def write(self, generation: int, claim: dict[str, Any]) -> None: ...
    def delete(self, generation: int) -> None: ...
    def enforces_create_only(self) -> bool: ...


def _name(generation: int) -> str:
    return f"{generation:012d}.json"


def _generation(name: str) -> int | None:
    stem, _, ext = name.partition(".")
    return int(stem) if ext == "json" and stem.isdigit() else None


class LocalStore:
    """Claims as files in a folder; creation is ``os.link`` (atomic, fails if the name exists)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)
        folder.mkdir(parents=True, exist_ok=True)

    def generations(self) -> list[int]:
        found = (_generation(p.name) for p in self.folder.iterdir())
        return sorted(g for g in found if g is not None)

    def read(self, generation: int) -> dict[str, Any] | None:
        try:
            claim: dict[str, Any] = json.loads((self.folder / _name(generation)).read_text())
        except FileNotFoundError:
            return None
        return claim

    def create(self, generation: int, claim: dict[str, Any]) -> bool:
        return create_local(self.folder / _name(generation), json.dumps(claim).encode())

    def write(self, generation: int, claim: dict[str, Any]) -> None:
        staged = self.folder / f".{uuid.uuid4().hex}.tmp"  # hidden: never a generation
        staged.write_text(json.dumps(claim))
        os.replace(staged, self.folder / _name(generation))

    def delete(self, generation: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.folder / _name(generation)).unlink()

    def enforces_create_only(self) -> bool:
        return True  # os.link never replaces an existing name


class S3Store:
    """Claims as objects; creation is ``PUT`` with ``If-None-Match: *``."""

    def __init__(self, uri: str) -> None:
        from pipelines.storage.s3 import s3_client

        parsed = urlparse(uri)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/") + "/"
        self.where = uri
        self.client = s3_client()

    def _key(self, generation: int) -> str:
        return self.prefix + _name(generation)

    def generations(self) -> list[int]:
        found: list[int] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                generation = _generation(item["Key"][len(self.prefix) :])
                if generation is not None:
                    found.append(generation)
        return sorted(found)

    def read(self, generation: int) -> dict[str, Any] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(generation))["Body"]
        except self.client.exceptions.NoSuchKey:
            return None
        claim: dict[str, Any] = json.loads(body.read())
        return claim

    def create(self, generation: int, claim: dict[str, Any]) -> bool:
        return self._put_if_absent(self._key(generation), json.dumps(claim).encode())

    def _put_if_absent(self, key: str, body: bytes) -> bool:
        return put_if_absent(self.client, self.bucket, key, body)

    def write(self, generation: int, claim: dict[str, Any]) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(generation), Body=json.dumps(claim).encode()
        )

    def delete(self, generation: int) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(generation))

    def enforces_create_only(self) -> bool:
        """Write a probe object twice with ``If-None-Match: *``: the second must be refused."""
        key = f"{self.prefix}.probe-{uuid.uuid4().hex}"
        try:
            self._put_if_absent(key, b"1")
            return not self._put_if_absent(key, b"2")
        finally:
            self.client.delete_object(Bucket=self.bucket, Key=key)


def store_for(uri: str) -> Store:
    if uri.startswith("s3a://"):
        return S3Store(uri)
    if uri.startswith("file://"):
        return LocalStore(Path(urlparse(uri).path))
    raise ConfigError(f"no lease store for {uri}")


@dataclass
class Claim:
    run_id: str
    host: str
    pid: int
    acquired_at: float
    expires_at: float
    released: bool = False

    @classmethod
    def of(cls, data: dict[str, Any]) -> Claim:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def alive(self, now: float) -> bool:
        if self.released or self.expires_at <= now:
            return False
        return not (self.host == socket.gethostname() and not _process_exists(self.pid))

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.acquired_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        until = datetime.fromtimestamp(self.expires_at, UTC).strftime("%H:%M:%SZ")
        return f"run {self.run_id} on {self.host} (pid {self.pid}) since {since}, expiring {until}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


class Lease:
    """A held claim; extends itself until released. Use :func:`acquire`."""

    def __init__(self, store: Store, generation: int, claim: Claim, ttl_s: float) -> None:
        self.store = store
        self.generation = generation
        self.claim = claim
        self.ttl_s = ttl_s
        # The claim of a run that died holding the lease (it expired, or its process is gone):
        # that run's records may still say "running". A released claim is not one.
        self.previous: Claim | None = None
        self.keep_on_release = False  # set by a run that could not record its outcome
        self._stop = threading.Event()
        self._lost: str | None = None
        self._renewal_error: str | None = None  # why the latest heartbeat failed, if it did
        self._thread = threading.Thread(target=self._heartbeat, name="lakeshard-lease", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            # Until this beat's listing and write return (their retries can outlast the claim):
            # a claim that expires meanwhile was lost to storage, not to another run.
            self._renewal_error = "no answer yet"
            try:
                if max(self.store.generations(), default=0) != self.generation:
                    self._renewal_error = None
                    self._lost = "a newer claim replaced it"
                    return
                expires_at = time.time() + self.ttl_s
                self.store.write(self.generation, {**vars(self.claim), "expires_at": expires_at})
                self.claim.expires_at = expires_at
                self._renewal_error = None
            except Exception as exc:  # storage hiccup: retried next beat until the claim expires
                self._renewal_error = first_line(exc)
                if time.time() > self.claim.expires_at:
                    self._lost = "it could not be renewed"
                    return

    def check(self) -> None:
        """Raise unless this run still holds the lease: call before every commit."""
        if self._lost is None and time.time() >= self.claim.expires_at:
            self._lost = "it expired"
        if self._lost is not None and self._renewal_error is not None:
            raise StorageError(
                f"lost the lease on {self.store.where}: storage failed while renewing it "
                f"({self._renewal_error}) until it expired; nothing more is committed"
            )
        if self._lost is not None:
            raise PolicyError(
                f"lost the lease on {self.store.where} ({self._lost}); nothing more is committed"
            )

    def release(self) -> None:
        """Mark the claim released (unless ``keep_on_release``: then it is left to expire, and
        the run that takes it over finds it in ``previous``).

        It stays the highest generation (the next run deletes it when it claims the one above):
        deleting it here would let a run that listed it a moment ago claim the generation above
        it while another, listing after the delete, starts again from a lower one — two holders
        at once."""
        self._stop.set()
        self._thread.join()
        if self._lost is None and not self.keep_on_release:
            self.claim.released = True
            with contextlib.suppress(Exception):  # an unreleased claim simply expires
                self.store.write(self.generation, vars(self.claim))


def acquire(uri: str, run_id: str, ttl_s: float, wait_s: float) -> Lease:
    """Take the lease at ``uri`` for ``run_id``, waiting up to ``wait_s`` for a live holder."""
    try:
        store = store_for(uri)
        if not store.enforces_create_only():
            raise ConfigError(
                f"the lake's storage at {uri} accepts If-None-Match: * but does not enforce it, "
                "so two runs could both believe they hold the lease; lakeshard refuses to run "
                "unguarded (use AWS S3, MinIO, SeaweedFS or another store that enforces it)"
            )
        return _claim(store, run_id, ttl_s, wait_s)
    except (ConfigError, PolicyError, Terminated):
        raise
    except Exception as exc:
        raise StorageError(f"storage failed taking the lease at {uri}: {first_line(exc)}") from None


def _claim(store: Store, run_id: str, ttl_s: float, wait_s: float) -> Lease:
    deadline = time.monotonic() + wait_s
    while True:
        generations = store.generations()
        top = max(generations, default=0)
        data = store.read(top) if top else None
        holder = Claim.of(data) if data else None
        now = time.time()
        if holder is not None and holder.alive(now):
            if time.monotonic() >= deadline:
                raise PolicyError(
                    f"dataset is being written by {holder.describe()}; "
                    f"retry later or wait for it with --wait SECONDS (lease {store.where})"
                )
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
            raise_if_stopped()
            continue
        claim = Claim(run_id, socket.gethostname(), os.getpid(), now, now + ttl_s)
        if store.create(top + 1, vars(claim)):
            for old in generations:
                store.delete(old)
            lease = Lease(store, top + 1, claim, ttl_s)
            lease.previous = holder if holder is not None and not holder.released else None
            return lease
        # Another run claimed the same generation first: look again.


@contextlib.contextmanager
def held(uri: str, run_id: str, ttl_s: float, wait_s: float) -> Iterator[Lease]:
    lease = acquire(uri, run_id, ttl_s, wait_s)
    try:
        yield lease
    finally:
        lease.release()
