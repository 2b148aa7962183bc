"""The Kubernetes manifests: generated parts current, every overlay renders with kustomize, every
object validates strictly against the Kubernetes schemas (the Spark operator's objects against its
CRD's schema, kept in infra/k8s/spark-operator/), and the Spark settings on the cluster are the
ones get_spark uses locally (one source of truth)."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
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
OPERATOR_SCHEMA = K8S / "spark-operator" / "scheduledsparkapplication.schema.json"
SCHEDULED = "ScheduledSparkApplication"
# get_spark's settings that only make sense for a local session (or name a local path).
LOCAL_ONLY = {
    "spark.master",
    "spark.driver.host",
    "spark.driver.bindAddress",
    "spark.driver.memory",
    "spark.jars",
    "spark.driver.extraJavaOptions",
    "spark.executor.extraJavaOptions",
    "spark.databricks.delta.snapshotPartitions",  # sized to the local cores
}


def render(overlay: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    done = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@cache
def operator_validator() -> jsonschema.protocols.Validator:
    """The operator CRD's OpenAPI schema as JSON Schema, strict as ``kubectl --validate=strict``
    is: an object that lists its properties takes no others."""
    kept = json.loads(OPERATOR_SCHEMA.read_text())

    def strict(node: Any) -> Any:
        if isinstance(node, list):
            return [strict(v) for v in node]
        if not isinstance(node, dict):
            return node
        node = {k: strict(v) for k, v in node.items()}
        open_ended = "additionalProperties" in node or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        if "properties" in node and not open_ended:
            node["additionalProperties"] = False
        return node

    schema = strict(kept["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


def validate(obj: dict[str, Any]) -> None:
    if obj["kind"] == SCHEDULED:
        assert obj["apiVersion"] == json.loads(OPERATOR_SCHEMA.read_text())["apiVersion"]
        operator_validator().validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def scheduled_pods(obj: dict[str, Any]) -> dict[str, Any]:
    """What a CronJob or ScheduledSparkApplication runs: its pod spec or application spec."""
    if obj["kind"] == SCHEDULED:
        return obj["spec"]["template"]
    return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


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
    assert kinds - {"Namespace", SCHEDULED} == {
        "ConfigMap",
        "CronJob",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    for obj in objects:
        validate(obj)
        assert obj["kind"] != "Secret", "a literal secret in the manifests"
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "lakeshard"


def test_a_strictly_invalid_object_is_refused() -> None:
    """The validation above can fail: an unknown field is an error."""
    (job, *_) = [o for o in render(OVERLAYS[0]) if o["kind"] == "CronJob"]
    job["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)


@pytest.mark.parametrize(
    "damage",
    ["unknown field", "wrong type", "missing field"],
)
def test_a_scheduled_spark_application_off_the_operators_schema_is_refused(damage: str) -> None:
    """The operator's schema is applied, strictly: each of these is an error."""
    app = next(o for o in render(K8S / "overlays" / "spark-operator") if o["kind"] == SCHEDULED)
    validate(app)
    template = app["spec"]["template"]
    if damage == "unknown field":
        template["driver"]["serviceAcount"] = "lakeshard"
    elif damage == "wrong type":
        template["dynamicAllocation"]["maxExecutors"] = "8"
    else:
        del template["mainApplicationFile"]
    with pytest.raises(jsonschema.ValidationError):
        validate(app)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_one_scheduled_job_per_dataset_and_verb_with_safe_defaults(overlay: Path) -> None:
    scheduled = {"CronJob", SCHEDULED}
    objects = {o["metadata"]["name"]: o for o in render(overlay) if o["kind"] in scheduled}
    wanted = {f"lakeshard-{v}-{d}" for d in list_datasets(SCHEMAS) for v in generate.VERBS}
    assert set(objects) == wanted
    for name, obj in objects.items():
        assert obj["spec"]["concurrencyPolicy"] == "Forbid", name
        if obj["kind"] == SCHEDULED:
            env = _safe_application(scheduled_pods(obj))
        else:
            env = _safe_cronjob(obj["spec"]["jobTemplate"]["spec"])
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "lakeshard-s3"


def _safe_cronjob(job: dict[str, Any]) -> dict[str, Any]:
    """The checks of a CronJob's Job; its container's env by name."""
    assert job["activeDeadlineSeconds"] > 0
    assert job["backoffLimit"] <= 1
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "lakeshard"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    # The executors run the image the driver runs.
    assert env["LAKESHARD_IMAGE"]["value"] == container["image"] != "lakeshard:latest"
    return env


def _safe_application(app: dict[str, Any]) -> dict[str, Any]:
    """The checks of a ScheduledSparkApplication's template; its driver's env by name."""
    assert app["restartPolicy"]["onFailureRetries"] <= 1
    assert app["driver"]["serviceAccount"] == "lakeshard"
    for role in ("driver", "executor"):
        assert app[role]["podSecurityContext"]["runAsNonRoot"] is True
    assert app["image"] != "lakeshard:latest"  # the overlay set it
    return {e["name"]: e for e in app["driver"]["env"]}


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


def test_the_operators_applications_carry_the_same_settings() -> None:
    local = base_config(resolve_config(env={}))
    expected = cluster_config(resolve_config(env={}))
    shared = {k: v for k, v in local.items() if k not in LOCAL_ONLY}
    apps = [o for o in render(K8S / "overlays" / "spark-operator") if o["kind"] == SCHEDULED]
    assert {a["metadata"]["name"] for a in apps} == {
        f"lakeshard-{verb}-{d}" for d in list_datasets(SCHEMAS) for verb in ("ingest", "maintain")
    }
    for app in apps:
        template = scheduled_pods(app)
        conf = template["sparkConf"]
        assert {k: conf[k] for k in expected} == expected
        assert {k: conf[k] for k in shared} == shared
        typed = template["dynamicAllocation"]  # what the operator turns into the same --conf
        key = "spark.dynamicAllocation."
        assert typed == {
            "enabled": True,
            "initialExecutors": int(DYNAMIC_ALLOCATION[key + "initialExecutors"]),
            "minExecutors": int(DYNAMIC_ALLOCATION[key + "minExecutors"]),
            "maxExecutors": int(DYNAMIC_ALLOCATION[key + "maxExecutors"]),
            "shuffleTrackingEnabled": True,
            "shuffleTrackingTimeout": 1000
            * int(DYNAMIC_ALLOCATION[key + "shuffleTracking.timeout"].removesuffix("s")),
        }
        assert template["executor"]["memory"] == expected["spark.executor.memory"]
        assert template["mode"] == "cluster"
        assert template["mainApplicationFile"].startswith("local:///opt/lakeshard/jobs/")
