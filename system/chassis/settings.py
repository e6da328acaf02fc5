"""Typed settings, read once from a service's prefixed environment variables.

Every service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (for
example ``PRODUCTS_``), so ``PRODUCTS_DATABASE_URL`` configures products and nothing
else. :func:`load_settings` turns a bad value into one line naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="ServiceSettings")


class SettingsError(SystemExit):
    """A setting is missing or malformed; the message names the environment variable."""


class ServiceSettings(BaseSettings):
    """What every service is told; env var = prefix + field name in upper case."""

    model_config = SettingsConfigDict(env_prefix="SERVICE_", extra="ignore", frozen=True)

    name: str = "service"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    replica: str = ""
    data_dir: Path = Path(".harness/dev")
    database_url: str | None = None
    """SQLAlchemy async URL; default: a SQLite file ``<data_dir>/<name>.db``."""
    database_pool_size: int = Field(20, ge=1, le=200)
    """PostgreSQL connections per replica, opened when first needed and then kept. No
    overflow: an overflow connection is closed when it is returned, so under steady load
    orders opened ~7 new backends a second (a fork, authentication, a cold statement
    cache each)."""
    sqlite_readers: int = Field(4, ge=1, le=32)
    """Read-only connections beside SQLite's single writer (WAL readers run concurrently)."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The served process's event loop (tests in-process use pytest's)."""
    sqlite_checkpoint_ms: int = Field(500, ge=0, le=60000)
    """How often a thread of the service copies SQLite's write-ahead log into the file
    (``system.chassis.checkpoints``); 0: the commit that fills the log does it, on the
    event loop, as SQLite does by default."""
    sqlite_inline: bool = True
    """Run SQLite statements on the event loop (``system.chassis.sqlite_inline``); false:
    on aiosqlite's thread."""
    kafka_bootstrap: str | None = None
    """``host:port`` of Kafka; unset means events are kept in the outbox, not relayed."""
    kafka_fetch_wait_ms: int = Field(200, ge=0, le=5000)
    """How long the broker may hold a consumer's fetch to gather up to
    ``kafka_fetch_min_bytes``: batches of events cost a consumer one transaction and one
    offset commit each, so under load waiting a little is cheaper than fetching each
    event on its own. Consumers are off the saga's critical path."""
    kafka_fetch_min_bytes: int = Field(65536, ge=1)
    outbox_batch: int = Field(500, ge=1, le=5000)
    """The most rows an outbox relay cycle reads, sends and marks. A relay behind its
    service (a backlog) drains this many per cycle, each cycle a read, one produce request
    and a marking transaction; on a loaded service a cycle takes a few loop turns of
    tens of milliseconds each, and 100 rows a cycle could not catch up with 300 events a
    second there."""
    outbox_linger_ms: int = Field(15, ge=0, le=1000)
    """How long the outbox relay, woken by a commit, waits for more commits before it
    reads its batch: events ride together in one produce request and one marking
    transaction. Adds up to this much to each event's publish latency."""
    outbox_shared: bool = False
    """Relays of other processes (replicas on the same database) relay this outbox too:
    they take turns (``system.chassis.outbox_turn``), so each event is sent once."""
    otlp_endpoint: str | None = None
    """Base URL of an OTLP/HTTP collector (Jaeger); unset means no span export."""
    jwt_public_key_file: Path | None = None
    jwt_issuer: str = "microharness-users"
    jwt_audience: str = "microharness"
    mesh: dict[str, str] = Field(default_factory=dict)
    """Upstream service name → base URL of its Envoy mesh listener (JSON in the env)."""
    client_secret: str | None = None
    """This service's client-credentials secret: it asks ``users`` for a service token
    (``POST /token``) to call other services through the mesh."""
    mesh_timeout_s: float = Field(2.0, gt=0)
    mesh_retries: int = Field(2, ge=0, le=5)
    mesh_breaker_threshold: int = Field(5, ge=1)
    mesh_breaker_reset_s: float = Field(10.0, gt=0)
    defects: frozenset[str] = frozenset()
    """Deliberate defects, to prove that the harness notices a broken system (never set
    them elsewhere). ``drop:<event type>``: acknowledge that event without handling it,
    the classic lost-event bug. JSON in the env:
    ``PRODUCTS_DEFECTS='["drop:order.confirmed"]'``."""
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / f'{self.name}.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database.startswith("sqlite")


def load_settings(cls: type[S]) -> S:
    """Read ``cls`` from the environment, failing fast with the variable's name."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = "; ".join(
            f"{prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings for {cls.__name__}: {problems}") from None
