"""The Spark operator's ScheduledSparkApplication schema, kept in the repository for the tests.

    python infra/k8s/spark-operator/crd.py   # rewrite scheduledsparkapplication.schema.json

Where it comes from: the Kubeflow Spark operator's Go module
``github.com/kubeflow/spark-operator/v2`` at the version below, fetched from the Go module proxy
(the zip's SHA-256 is pinned), file
``charts/spark-operator-chart/crds/sparkoperator.k8s.io_scheduledsparkapplications.yaml``
(Apache-2.0). Kept is the ``openAPIV3Schema`` of its one version (v1beta2) without the
``description`` texts (95 KB instead of 850 KB); nothing else is changed. tests/test_k8s.py
validates the generated ScheduledSparkApplications against it, with unknown fields as errors.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import yaml

MODULE = "github.com/kubeflow/spark-operator/v2"
VERSION = "v2.4.0"
ZIP_SHA256 = "619a880b56a62bdf9fa593293d167e419b76d469659ca35e8a28de265abe3c61"
CRD = "charts/spark-operator-chart/crds/sparkoperator.k8s.io_scheduledsparkapplications.yaml"
SCHEMA = Path(__file__).resolve().parent / "scheduledsparkapplication.schema.json"


def fetch() -> dict[str, Any]:
    proxy = os.environ.get("GOPROXY", "https://proxy.golang.org").split(",")[0]
    with urllib.request.urlopen(f"{proxy}/{MODULE}/@v/{VERSION}.zip", timeout=120) as answer:
        blob = answer.read()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != ZIP_SHA256:
        raise SystemExit(f"{MODULE}@{VERSION}: zip SHA-256 {digest}, expected {ZIP_SHA256}")
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        crd = yaml.safe_load(archive.read(f"{MODULE}@{VERSION}/{CRD}"))
    (version,) = crd["spec"]["versions"]
    return {
        "source": f"{MODULE}@{VERSION} {CRD} (Go module proxy; zip sha256 {ZIP_SHA256})",
        "apiVersion": f"{crd['spec']['group']}/{version['name']}",
        "kind": crd["spec"]["names"]["kind"],
        "openAPIV3Schema": _without_descriptions(version["schema"]["openAPIV3Schema"]),
    }


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def main() -> int:
    SCHEMA.write_text(json.dumps(fetch(), sort_keys=True, indent=None) + "\n")
    print(f"wrote {SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
