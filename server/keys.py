"""API keys of the chat API: who may call, for which tenant, which assistants, and within which limits.

A key reads `lorag_<id>_<secret>`. Only the id is stored in clear (it finds the record); the secret is kept as
HMAC-SHA256 under a random per-key salt. The secret is 256 random bits, so a fast keyed hash is as safe as a slow
password hash here (no dictionary to try) and costs microseconds per request instead of ~50 ms of CPU. The
comparison is constant-time, and an unknown id costs the same HMAC as a known one.

Keys come from a JSON/YAML file (`LORAG_API_KEYS_FILE`, written by `lorag keys create|revoke`, re-read when it
changes, so a revocation takes effect without a restart) and/or inline JSON of the same shape (`LORAG_API_KEYS`).
With neither, the chat API is open: the demo.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.errors import Unauthorized

log = logging.getLogger(__name__)

PREFIX = "lorag"
ALL = "*"
# How often the file's modification time is looked at: a stat per request would be cheap, but pointless.
RELOAD_EVERY_S = 1.0
_DUMMY_SALT = secrets.token_bytes(16)


class KeysError(ValueError):
    """The keys file or setting cannot be read or is invalid."""


class KeyLimits(BaseModel):
    """What one key may use; unset: no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute (429 above).")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Prompt + completion tokens per minute, as vLLM counts them (429 above)."
    )
    concurrent_streams: int | None = Field(default=None, ge=1, description="Streams open at once (429 above).")


class KeyRecord(BaseModel):
    """One key as stored: never the secret itself."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{6,32}$", description="The public part of the key, which finds the record.")
    tenant: str = Field(min_length=1, description="The brand or customer the key belongs to.")
    name: str = Field(default="", description="What the key is for (website, staff tools, ...).")
    hash: str = Field(description="hmac-sha256$<salt hex>$<digest hex> of the secret part.")
    assistants: list[str] = Field(default_factory=lambda: [ALL], description="Assistants it may use; '*': all.")
    limits: KeyLimits = Field(default_factory=KeyLimits)
    created_at: float = Field(default_factory=time.time)
    revoked: bool = False

    def allows(self, assistant: str) -> bool:
        """Whether this key may use `assistant`."""
        return ALL in self.assistants or assistant in self.assistants


class KeysFile(BaseModel):
    """The whole file (or the LORAG_API_KEYS setting)."""

    model_config = ConfigDict(extra="forbid")

    keys: list[KeyRecord] = Field(default_factory=list)


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret part."""
    salt = secrets.token_bytes(16)
    return f"hmac-sha256${salt.hex()}${_digest(salt, secret).hex()}"


def verify_secret(stored: str, secret: str) -> bool:
    """Whether `secret` is the one `stored` was made from (constant-time)."""
    scheme, _, rest = stored.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    try:
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    return scheme == "hmac-sha256" and hmac.compare_digest(_digest(salt, secret), digest)


def new_key(tenant: str, assistants: list[str], limits: KeyLimits, name: str = "") -> tuple[str, KeyRecord]:
    """A fresh key: the token to hand out (shown once) and the record to store."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    record = KeyRecord(id=key_id, tenant=tenant, name=name, hash=hash_secret(secret), assistants=assistants)
    record.limits = limits
    return f"{PREFIX}_{key_id}_{secret}", record


def parse_keys(text: str, source: str) -> KeysFile:
    """Keys from JSON or YAML text, with errors naming `source`."""
    try:
        raw = yaml.safe_load(text) or {}
        return KeysFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise KeysError(f"invalid API keys in {source}: {exc}") from exc


def read_keys_file(path: Path) -> KeysFile:
    """The keys file; an absent file holds no keys."""
    if not path.exists():
        return KeysFile()
    try:
        return parse_keys(path.read_text(), str(path))
    except OSError as exc:
        raise KeysError(f"cannot read API keys file {path}: {exc}") from exc


def write_keys_file(path: Path, keys: KeysFile) -> None:
    """Replace the keys file atomically, readable by its owner only (it holds hashes, not keys, but still)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(keys.model_dump_json(indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise


class KeyRing:
    """The keys the gateway accepts; `enabled` is False when none is configured (the open demo)."""

    def __init__(self, path: Path | None = None, inline: str | None = None) -> None:
        self.path = path
        self._inline = parse_keys(inline, "LORAG_API_KEYS").keys if inline else []
        self._by_id: dict[str, KeyRecord] = {}
        self._mtime: float | None = None
        self._checked = 0.0
        self._load()

    @property
    def enabled(self) -> bool:
        return self.path is not None or bool(self._inline)

    def _load(self) -> None:
        records = list(self._inline)
        if self.path is not None:
            self._mtime = self.path.stat().st_mtime if self.path.exists() else None
            records += read_keys_file(self.path).keys
        self._by_id = {r.id: r for r in records}

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < RELOAD_EVERY_S:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime if self.path.exists() else None
            if mtime != self._mtime:
                self._load()
                log.info("API keys reloaded from %s: %d keys", self.path, len(self._by_id))
        except (OSError, KeysError) as exc:
            # A half-edited file must not lock everyone out: keep the keys last read.
            log.error("API keys file not reloaded, keeping the previous keys: %s", exc)

    def authenticate(self, authorization: str) -> KeyRecord:
        """The key record for an `Authorization` header value (Unauthorized, 401, otherwise)."""
        self._refresh()
        scheme, _, token = authorization.partition(" ")
        prefix, _, rest = token.strip().partition("_")
        key_id, _, secret = rest.partition("_")
        record = self._by_id.get(key_id) if prefix == PREFIX else None
        # The same work whether or not the id exists, so timing does not tell which ids do.
        stored = record.hash if record is not None else f"hmac-sha256${_DUMMY_SALT.hex()}${'0' * 64}"
        valid = verify_secret(stored, secret)
        if scheme.lower() != "bearer" or record is None or not valid or record.revoked:
            raise Unauthorized("Incorrect API key provided (Authorization: Bearer <key>)")
        return record

    def __len__(self) -> int:
        return len(self._by_id)
