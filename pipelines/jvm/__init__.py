"""The JVM artifacts Spark needs beside pyspark (Delta, hadoop-aws, AWS SDK v2 modules) and
lakeshard's own jar (the content hash as a Spark expression, ``src/main/java``).

They are pinned in ``pom.xml`` next to this file, resolved from Maven Central and built once into a
cache folder named after the hash of the pom and the Java sources, and then used offline by every
SparkSession and spark-submit.

    python -m pipelines.jvm resolve     # download once (needs Maven and the network)
    python -m pipelines.jvm path        # print the jar folder
    python -m pipelines.jvm defaults    # write spark-defaults.conf for plain spark-submit / pyspark
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.config import Config, resolve_config
from pipelines.errors import ConfigError

POM = Path(__file__).with_name("pom.xml")
SOURCES = Path(__file__).with_name("src")
LOG4J = Path(__file__).with_name("log4j2.properties")
COMPLETE = ".complete"
HASH_JAR = "lakeshard-hash.jar"
CONTENT_HASH_FUNCTION = "lakeshard_content_hash"  # registered by LakeshardExtensions
#: The session extensions: Delta's, and lakeshard's (registers ``lakeshard_content_hash``).
EXTENSIONS = ("io.delta.sql.DeltaSparkSessionExtension", "io.lakeshard.hash.LakeshardExtensions")


def cache_root(config: Config | None = None) -> Path:
    """``LAKESHARD_CACHE`` or ``~/.cache/lakeshard``: shared by every clone on the machine."""
    return (config or resolve_config()).cache


def jars_dir(config: Config | None = None) -> Path:
    """The folder holding this pom's jars (``LAKESHARD_JARS`` overrides it)."""
    config = config or resolve_config()
    if config.jars is not None:
        return config.jars
    return config.cache / f"jars-{build_stamp()}"


def build_stamp() -> str:
    """12 hex digits of the hash of the pom and every Java source: a change to either is a new
    jar folder, so a stale build is never used."""
    digest = hashlib.sha256(POM.read_bytes())
    for source in sorted(SOURCES.rglob("*.java")):
        digest.update(source.relative_to(SOURCES).as_posix().encode() + b"\0")
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def jar_paths(config: Config | None = None) -> list[str]:
    """Absolute paths of the resolved jars, sorted; a ConfigError if they were never resolved."""
    folder = jars_dir(config)
    if not (folder / COMPLETE).exists():
        raise ConfigError(
            f"JVM artifacts are not resolved in {folder}: run `make env` "
            "(or `python -m pipelines.jvm resolve`) once with network access"
        )
    return sorted(str(p) for p in folder.glob("*.jar"))


def resolve() -> Path:
    """Download the pinned artifacts and build lakeshard's jar into the cache unless they are
    already there."""
    folder = jars_dir()
    if (folder / COMPLETE).exists():
        return folder
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConfigError("Maven (`mvn`) is needed once to resolve the JVM artifacts; install it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".jars-", dir=folder.parent))
    cmd = [
        mvn,
        "-B",
        "-q",
        f"-Dmaven.repo.local={cache_root() / 'm2'}",
        "-f",
        str(POM),
        f"-Dlakeshard.build={staging / 'build'}",
        "package",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    subprocess.run(cmd, check=True)
    (staging / "build" / HASH_JAR).rename(staging / HASH_JAR)
    shutil.rmtree(staging / "build")
    (staging / COMPLETE).write_text("".join(p.name + "\n" for p in sorted(staging.glob("*.jar"))))
    try:
        staging.rename(folder)  # atomic: a concurrent resolver either wins or finds it complete
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def spark_defaults() -> str:
    """spark-defaults.conf lines that give plain spark-submit / pyspark Delta and S3A."""
    return "\n".join(
        [
            "# Written by `python -m pipelines.jvm defaults`: lakeshard's pinned JVM artifacts.",
            f"spark.jars {','.join(jar_paths())}",
            f"spark.sql.extensions {','.join(EXTENSIONS)}",
            "spark.sql.catalog.spark_catalog org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "",
        ]
    )


def write_spark_defaults() -> Path:
    """Install spark-defaults.conf into the SPARK_HOME of the pyspark in this environment."""
    import pyspark

    conf_dir = resolve_config().spark.conf_dir or Path(pyspark.__file__).parent / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    target = conf_dir / "spark-defaults.conf"
    target.write_text(spark_defaults())
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verb = args[0] if args else "path"
    try:
        if verb == "resolve":
            print(resolve())
        elif verb == "path":
            print(jars_dir())
        elif verb == "defaults":
            print(write_spark_defaults())
        else:
            print(
                f"usage: python -m pipelines.jvm [resolve|path|defaults] (got {verb!r})",
                file=sys.stderr,
            )
            return 2
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
