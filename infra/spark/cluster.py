"""Start and stop a Spark standalone cluster (one master, N workers) on loopback.

Uses ``spark-class`` from the pyspark in this environment, so master, workers and the driver run
the same Spark. Tests start it through :func:`start`; by hand:

    python infra/spark/cluster.py start STATE_DIR [--workers 2]   # prints the master URL
    python infra/spark/cluster.py stop STATE_DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _launch(state: Path, name: str, args: list[str], env: dict[str, str]) -> int:
    log = state / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(_spark_home() / "bin" / "spark-class"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def _wait_for(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {text!r} in {log}")


def start(
    state: Path, workers: int = 2, cores: int = 1, memory: str = "1g", timeout: float = 120.0
) -> dict[str, object]:
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(_spark_home()),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(state),
        SPARK_WORKER_DIR=str(state / "work"),
        PYSPARK_PYTHON=env.get("PYSPARK_PYTHON", sys.executable),
    )
    port = _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    pids = [
        _launch(
            state,
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(_free_port()),
            ],
            env,
        )
    ]
    _wait_for(state / "master.log", "I have been elected leader", timeout)
    for n in range(workers):
        work = state / "work" / f"worker-{n}"
        work.mkdir(parents=True, exist_ok=True)
        pids.append(
            _launch(
                state,
                f"worker-{n}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    "--host",
                    "127.0.0.1",
                    "--webui-port",
                    str(_free_port()),
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--work-dir",
                    str(work),
                    master_url,
                ],
                env,
            )
        )
    for n in range(workers):
        _wait_for(state / f"worker-{n}.log", "Successfully registered with master", timeout)
    info: dict[str, object] = {
        "master": master_url,
        "pids": pids,
        "work_dirs": [str(state / "work" / f"worker-{n}") for n in range(workers)],
    }
    (state / "cluster.json").write_text(json.dumps(info))
    return info


def stop(state: Path) -> None:
    info_file = state / "cluster.json"
    if not info_file.exists():
        return
    pids = json.loads(info_file.read_text())["pids"]
    for pid in reversed(pids):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 20
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    info_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start")
    p_start.add_argument("state", type=Path)
    p_start.add_argument("--workers", type=int, default=2)
    p_stop = sub.add_parser("stop")
    p_stop.add_argument("state", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "start":
        print(start(args.state, workers=args.workers)["master"])
    else:
        stop(args.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
