"""The S3 secret key appears nowhere lakeshard writes or sends, wherever a user may look.

Real runs against the S3 server, each a separate process as cron would start it: an ingest with
the driver's log at INFO and Spark's event log on, pushing metrics to a real Pushgateway, writing
a textfile for node_exporter and posting alerts to a webhook; a failing run with ``--debug`` (its
traceback); ``monitor`` and ``status --html`` after them. Then every byte they produced is
searched: stdout and stderr, the event log, the lake's objects (tables, run log and its details,
quarantine, leases), the page, the metrics as the Pushgateway serves them, the alert payloads,
and the Kubernetes manifests rendered with the secret in the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from infra.k8s import generate
from infra.monitoring import servers
from pipelines import sample
from tests.conftest import SCHEMAS, TEST_SPARK_CONF
from tests.helpers import Receiver, boto_client, run_cli

pytestmark = pytest.mark.s3


def _strict_schemas(folder: Path) -> Path:
    """The shipped events dataset, and a copy whose rule fails every run."""
    shutil.copytree(SCHEMAS, folder)
    strict = folder / "strict"
    shutil.copytree(folder / "events", strict)
    with (strict / "dataset.yaml").open("a") as out:
        out.write("rules:\n  - {name: never, expr: 'event_id < 0', on_violation: fail}\n")
    return folder


def _kubernetes_manifests() -> str:
    texts = [text for text in generate.rendered().values()]
    if shutil.which("kubectl"):
        for overlay in sorted((generate.BASE.parent / "overlays").iterdir()):
            done = subprocess.run(
                ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=True
            )
            texts.append(done.stdout)
    return "\n".join(texts)


def test_the_secret_key_is_in_nothing_lakeshard_writes_or_sends(
    s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = s3["AWS_SECRET_ACCESS_KEY"]
    prefix = s3["prefix"]
    client = boto_client(s3)
    raw = tmp_path / "raw"
    sample.write_events(raw, seed=31, files=2, rows=40)
    for path in sorted(raw.iterdir()):
        client.upload_file(str(path), "raw", f"{prefix}/{path.name}")
    schemas = _strict_schemas(tmp_path / "schemas")
    events_log = tmp_path / "spark-events"
    events_log.mkdir()
    metrics_dir = tmp_path / "metrics"
    page = tmp_path / "status.html"
    lake = f"s3a://lake/{prefix}"
    env = dict(
        os.environ,
        # Uncompressed (Spark 4 compresses event logs by default), so that it can be searched.
        LAKESHARD_SPARK_CONF=f"{TEST_SPARK_CONF};spark.eventLog.enabled=true;"
        f"spark.eventLog.compress=false;spark.eventLog.dir=file://{events_log}",
        LAKESHARD_SPARK_LOG_LEVEL="INFO",
    )
    receiver = Receiver()
    outputs: list[str] = []
    try:
        with servers.pushgateway(tmp_path) as gateway:
            targets = ["--pushgateway", gateway, "--metrics-dir", str(metrics_dir)]
            targets += ["--webhook", f"{receiver.url}/hook"]
            common = ["--lake", lake, "--schemas", str(schemas), "--master", "local[2]"]
            runs = [
                ("ingest", "events", f"s3a://raw/{prefix}", *common, *targets, "--debug"),
                ("ingest", "strict", f"s3a://raw/{prefix}", *common, *targets, "--debug"),
                ("monitor", "strict", *common[:4], "--webhook", f"{receiver.url}/hook"),
                ("status", *common[:4], "--html", str(page)),
            ]
            codes = []
            for args in runs:
                done = run_cli(*args, env=env)
                codes.append(done.returncode)
                outputs += [done.stdout, done.stderr]
            with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as answer:
                pushed = answer.read().decode()
    finally:
        receiver.server.shutdown()
    assert codes == [0, 3, 3, 0], outputs
    assert "Traceback" in outputs[3]  # --debug showed the failing run's traceback
    assert "INFO" in outputs[1]  # the driver's log, at INFO

    # Each place was really written to, so that searching it means something.
    event_logs = [p.read_text() for p in sorted(events_log.rglob("*")) if p.is_file()]
    assert len(list(events_log.iterdir())) == 2  # one per Spark process
    assert sum("SparkListenerApplicationStart" in t for t in event_logs) == 2
    assert any("SparkListenerJobStart" in t for t in event_logs)
    assert 'dataset="events"' in pushed
    textfiles = [p.read_text() for p in metrics_dir.iterdir()]
    assert textfiles
    alerts = [str(body) for body in receiver.at("/hook")]
    assert any("failed" in body for body in alerts)
    assert "<svg" in page.read_text()
    objects = client.list_objects_v2(Bucket="lake", Prefix=prefix).get("Contents", [])
    keys = [o["Key"] for o in objects]
    assert any("/_lakeshard/runs/" in key for key in keys)
    lake_bytes = [client.get_object(Bucket="lake", Key=key)["Body"].read() for key in keys]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    manifests = _kubernetes_manifests()
    assert "CronJob" in manifests

    searched = {
        "stdout and stderr": "\n".join(outputs),
        "Spark event logs": "\n".join(event_logs),
        "pushed metrics": pushed,
        "metrics textfiles": "\n".join(textfiles),
        "alert payloads": "\n".join(alerts),
        "status page": page.read_text(),
        "Kubernetes manifests": manifests,
    }
    assert [where for where, text in searched.items() if secret in text] == []
    assert [k for k, body in zip(keys, lake_bytes, strict=True) if secret.encode() in body] == []
