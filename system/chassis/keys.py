"""The development RS256 key pair: made once into a state folder, never committed.

``users`` signs with the private key; every service and the gateway verify with the
public key or the JWKS derived from it (RFC 7517), so a key rotation is a file change.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class KeyFiles:
    folder: Path

    @property
    def private(self) -> Path:
        return self.folder / "private.pem"

    @property
    def public(self) -> Path:
        return self.folder / "public.pem"

    @property
    def jwks(self) -> Path:
        return self.folder / "jwks.json"

    def ensure(self) -> KeyFiles:
        """Make the key pair and JWKS if they do not exist yet (atomically, 0600 key)."""
        if self.private.exists() and self.public.exists() and self.jwks.exists():
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write(self.private, private_pem, mode=0o600)
        _write(self.public, public_pem)
        _write(self.jwks, json.dumps(jwks_of(public_pem)).encode())
        return self


def key_id(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()[:16]


def jwks_of(public_pem: bytes) -> dict[str, Any]:
    public = serialization.load_pem_public_key(public_pem)
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("the public key is not an RSA key")
    numbers = public.public_numbers()
    return {
        "keys": [
            {
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": key_id(public_pem),
                "n": _b64(numbers.n),
                "e": _b64(numbers.e),
            }
        ]
    }


def _write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
