"""Password hashing (argon2id) and token issuing (RS256 with a ``kid``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio.to_thread
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from system.chassis.keys import KeyFiles, key_id
from system.services.users.settings import UsersSettings

# OWASP's minimum for argon2id (19 MiB, 2 passes): ~20 ms of CPU a hash on this machine;
# the library default (64 MiB, 3 passes) would make every login cost ~80 ms.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(verify)


@dataclass(frozen=True)
class TokenIssuer:
    private_pem: bytes
    kid: str
    issuer: str
    audience: str
    ttl: timedelta

    @classmethod
    def from_settings(cls, settings: UsersSettings) -> TokenIssuer:
        if settings.jwt_private_key_file is not None:
            private = settings.jwt_private_key_file
            public = private.with_name("public.pem")
        else:
            files = KeyFiles(settings.data_dir / "jwt").ensure()
            private, public = files.private, files.public
        return cls(
            private_pem=private.read_bytes(),
            kid=key_id(public.read_bytes()),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl=timedelta(seconds=settings.token_ttl_s),
        )

    def issue(self, *, user_id: str, role: str, email: str) -> str:
        now = datetime.now(UTC)
        claims = {
            "sub": user_id,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(8),
            "role": role,
            "email": email,
        }
        return jwt.encode(claims, self.private_pem, algorithm="RS256", headers={"kid": self.kid})


def admin_password(settings: UsersSettings) -> str:
    """The seeded admin's password: from settings, or made once into the data folder."""
    if settings.admin_password:
        return settings.admin_password
    path = Path(settings.data_dir) / "admin-password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(18))
        path.chmod(0o600)
    return path.read_text().strip()
