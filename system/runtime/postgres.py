"""The stack's PostgreSQL server: its cluster (made once), readiness, one database per service.

Readiness and database creation go through the address clients use (Toxiproxy), like
Kafka's. PostgreSQL refuses to run as root; as root the cluster runs as the Debian
``postgres`` account (see :func:`server_user` and :func:`grant_access`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from system.runtime import tools
from system.runtime.process import Hook, Probe, as_user

log = logging.getLogger("harness.postgres")

SUPERUSER = "postgres"
"""The cluster's superuser role (``initdb -U``), which every service connects as."""
OS_USER = "postgres"
"""The Debian account the server runs as when the supervisor is root."""
_SOCKET_PATH_MAX = 107 - len("/.s.PGSQL.65535")


def server_user() -> str | None:
    """Who runs ``initdb`` and ``postgres``: the current user, or ``postgres`` under root."""
    return OS_USER if os.geteuid() == 0 else None


def socket_dir_arg(folder: Path) -> str:
    """``-k``'s value: the stack's own folder (no clash with another server's lock file in
    /var/run/postgresql), or none at all if the path is too long for a Unix socket (every
    client uses TCP anyway)."""
    return str(folder) if len(str(folder)) <= _SOCKET_PATH_MAX else ""


def grant_access(user: str, folders: Sequence[Path]) -> None:
    """Let ``user`` own ``folders`` and reach them: add search permission (``o+x``, never
    read) to each ancestor that lacks it, e.g. pytest's 0700 temporary folders."""
    for folder in folders:
        shutil.chown(folder, user, user)
        for parent in folder.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                log.info("chmod o+x %s, so that %s can reach %s", parent, user, folder)
                parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def initdb(data: Path, sockets: Path) -> Hook:
    """Create the cluster on first start (``PG_VERSION`` marks a finished one)."""

    def folders(user: str | None) -> bool:
        """Make (and hand over) the folders; whether the cluster already exists."""
        sockets.mkdir(parents=True, exist_ok=True)
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is not None:
            grant_access(user, (data, sockets))
        return (data / "PG_VERSION").exists()

    async def prepare() -> None:
        user = server_user()
        if folders(user):
            return
        proc = await asyncio.create_subprocess_exec(
            str(tools.initdb_binary()),
            "-D",
            str(data),
            "--auth=trust",  # 127.0.0.1 only, a throw-away local cluster
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-locale",  # C collation: no dependency on the machine's generated locales
            "--no-sync",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **as_user(user),
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {output.decode(errors='replace')[-500:]}")

    return prepare


async def connect_admin(port: int) -> asyncpg.Connection:
    """The superuser's connection to the ``postgres`` database at ``port`` (the proxy's, or
    the server's own)."""
    return await asyncpg.connect(
        host="127.0.0.1", port=port, user=SUPERUSER, database="postgres", timeout=3
    )


def postgres_probe(port: int) -> Probe:
    """Ready when a real session through ``port`` answers ``SELECT 1``."""

    async def probe() -> bool:
        try:
            conn = await connect_admin(port)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        try:
            return bool(await conn.fetchval("SELECT 1") == 1)
        finally:
            await conn.close()

    return probe


def create_databases(port: int, names: Sequence[str]) -> Hook:
    """One database per service, created if missing (names are checked by the topology)."""

    async def create() -> None:
        conn = await connect_admin(port)
        try:
            existing = {
                row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")
            }
            for name in names:
                if name not in existing:
                    with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                        await conn.execute(f'CREATE DATABASE "{name}"')
                    log.info("created database %s", name)
        finally:
            await conn.close()

    return create
