"""Creating a file only if its name is free, on a local folder and on S3: what the lease and
lakeshard's Spark-free Delta commits stand on. Of two writers racing for one name, exactly one
creates it; the other learns that it lost (False), never overwrites."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any


def create_local(path: Path, body: bytes) -> bool:
    """Write ``body`` to ``path`` unless it exists: a complete file, hard-linked into place
    (``os.link`` is atomic and fails if the name exists), so no reader sees it half written."""
    staged = path.parent / f".{uuid.uuid4().hex}.tmp"  # hidden: Delta and the lease skip it
    staged.write_bytes(body)
    try:
        os.link(staged, path)
    except FileExistsError:
        return False
    finally:
        staged.unlink()
    return True


def put_if_absent(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """``PUT`` with ``If-None-Match: *``: False where the object exists (or a conditional write
    to it is in flight); other errors are raised as boto3 gives them."""
    from botocore.exceptions import ClientError

    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        # 412: the object exists; 409: a concurrent conditional write to it is in flight.
        if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True
