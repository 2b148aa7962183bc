"""The Kubernetes manifests: generated parts current, every overlay renders with kustomize, every
object validates strictly against the Kubernetes schemas, and the spark-submit arguments carry the
settings get_spark uses locally (one source of truth)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.k8s import generate
from pipelines.config import resolve_config
from pipelines.schema.declarations import list_datasets
from pipelines.spark import DYNAMIC_ALLOCATION, base_config, cluster_config
from tests.conftest import REPO, SCHEMAS

K8S = REPO / "infra" / "k8s"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES = "1.35.0"  # a current release; --strict: unknown fields are errors
# get_spark's settings that only make sense for a local session (or name a local path).
LOCAL_ONLY = {
    "spark.master",
    "spark.driver.host",
    "spark.driver.bindAddress",
    "spark.driver.memory",
    "spark.jars",
    "spark.driver.extraJavaOptions",
    "spark.executor.extraJavaOptions",
}


def render(overlay: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    done = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def submit_settings(container: dict[str, Any]) -> dict[str, str]:
    """The --conf key=value pairs of a spark-submit command line."""
    args = container["args"]
    pairs = [args[i + 1] for i, arg in enumerate(args) if arg == "--conf"]
    return dict(pair.split("=", 1) for pair in pairs)


def test_the_generated_files_are_current() -> None:
    assert generate.main(["--check"]) == 0


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_object_of_every_overlay_validates_strictly(overlay: Path) -> None:
    objects = render(overlay)
    kinds = {o["kind"] for o in objects}
    assert kinds - {"Namespace"} == {
        "ConfigMap",
        "CronJob",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        assert obj["kind"] != "Secret", "a literal secret in the manifests"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "lakeshard"


def test_a_strictly_invalid_object_is_refused() -> None:
    """The validation above can fail: an unknown field is an error."""
    (job, *_) = [o for o in render(OVERLAYS[0]) if o["kind"] == "CronJob"]
    job["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_one_cronjob_per_dataset_and_verb_with_safe_defaults(overlay: Path) -> None:
    jobs = {o["metadata"]["name"]: o for o in render(overlay) if o["kind"] == "CronJob"}
    wanted = {f"lakeshard-{v}-{d}" for d in list_datasets(SCHEMAS) for v in generate.VERBS}
    assert set(jobs) == wanted
    for name, job in jobs.items():
        spec = job["spec"]
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
        assert spec["jobTemplate"]["spec"]["backoffLimit"] <= 1
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "lakeshard"
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["resources"]["limits"]["memory"]
        env = {e["name"]: e for e in container["env"]}
        # The executors run the image the driver runs.
        assert env["LAKESHARD_IMAGE"]["value"] == container["image"] != "lakeshard:latest"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "lakeshard-s3"


def test_the_driver_may_manage_its_executor_pods_and_nothing_more() -> None:
    (role,) = [o for o in render(OVERLAYS[0]) if o["kind"] == "Role"]
    resources = sorted(r for rule in role["rules"] for r in rule["resources"])
    assert resources == ["configmaps", "pods"]
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert not verbs & {"*", "update", "patch", "escalate", "bind", "impersonate"}


def test_spark_submit_carries_the_settings_get_spark_uses_locally() -> None:
    local = base_config(resolve_config(env={}))
    expected = cluster_config(resolve_config(env={}))
    for overlay in OVERLAYS:
        for job in (o for o in render(overlay) if o["kind"] == "CronJob"):
            (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            if container["command"] != ["spark-submit"]:
                continue  # monitor: no Spark
            settings = submit_settings(container)
            assert {k: settings[k] for k in expected} == expected
            shared = {k: v for k, v in local.items() if k not in LOCAL_ONLY}
            assert {k: settings[k] for k in shared} == shared  # Delta, S3A, zstd, ANSI, UTC
            assert {k: settings[k] for k in DYNAMIC_ALLOCATION} == DYNAMIC_ALLOCATION
            assert settings["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
            args = container["args"]
            assert args[args.index("--master") + 1] == "k8s://https://kubernetes.default.svc"
            assert args[args.index("--deploy-mode") + 1] == "client"
