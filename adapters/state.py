"""The adapters' desired state: which versions exist, which one each adapter serves, which are retired.

It is what an operator asked for, kept in one JSON file (written atomically) so that a restarted gateway
restores it; what the engines actually hold is observed separately and reconciled towards this. Each version
is served under its own name, `<adapter>@<short content hash>`: vLLM keys its prefix cache by adapter, so a new
name can never be answered from the old version's cached blocks, which reloading under the same name can.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

# The version an adapter has when the engine was started with it (`--lora-modules name=path`).
BOOT = "boot"


class StateError(RuntimeError):
    """The state file cannot be read or written."""


class VersionRecord(BaseModel):
    """One version of an adapter."""

    version: str = Field(description="Short content hash, or 'boot' for the engine's start-up adapter.")
    served_name: str = Field(description="The name vLLM serves this version under.")
    path: str | None = Field(
        default=None, description="The adapter directory; unknown for a boot version not seen yet."
    )
    digest: str | None = None
    rank: int | None = None
    registered_at: float = Field(default_factory=time.time)


class AdapterRecord(BaseModel):
    """An adapter (what assistants name) and its versions."""

    name: str
    active: str = Field(description="The version new requests go to.")
    history: list[str] = Field(default_factory=list, description="Earlier active versions, newest last.")
    retired: bool = False
    versions: dict[str, VersionRecord] = Field(default_factory=dict)
    engines: list[str] = Field(
        default_factory=list, description="Engine URLs that serve it; empty: every engine (learnt when first seen)."
    )

    def active_served_name(self) -> str:
        """What vLLM serves the active version as."""
        return self.versions[self.active].served_name

    def wanted(self) -> list[VersionRecord]:
        """The versions engines should hold: the active one (none once retired)."""
        return [] if self.retired else [self.versions[self.active]]


class DesiredState(BaseModel):
    """The whole file."""

    adapters: dict[str, AdapterRecord] = Field(default_factory=dict)


def version_served_name(adapter: str, version: str) -> str:
    """What vLLM serves a version as: the adapter's own name for the boot version, `name@version` otherwise."""
    return adapter if version == BOOT else f"{adapter}@{version}"


class StateFile:
    """Reads and atomically replaces the desired state; None as the path keeps it in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> DesiredState:
        if self.path is None or not self.path.exists():
            return DesiredState()
        try:
            return DesiredState.model_validate(json.loads(self.path.read_text()))
        except (OSError, ValueError, ValidationError) as exc:
            raise StateError(f"cannot read the adapters state file {self.path}: {exc}") from exc

    def save(self, state: DesiredState) -> None:
        if self.path is None:
            return
        text = state.model_dump_json(indent=2) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename: a crash leaves the old file or the new one, never half of one.
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StateError(f"cannot write the adapters state file {self.path}: {exc}") from exc


def seed_boot_adapters(state: DesiredState, names: list[str]) -> bool:
    """Add the manifest's adapters that the state does not know yet, as served at boot; True if any was added."""
    added = False
    for name in names:
        if name not in state.adapters:
            boot = VersionRecord(version=BOOT, served_name=version_served_name(name, BOOT))
            state.adapters[name] = AdapterRecord(name=name, active=BOOT, versions={BOOT: boot})
            added = True
    return added
