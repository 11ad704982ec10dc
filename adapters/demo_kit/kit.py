"""Reading a built demo kit: which base model and adapters it holds, as paths."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class KitModel:
    """A base model and its adapters (name -> directory)."""

    name: str
    path: Path
    adapters: dict[str, Path]
    # Later versions of the adapters (name -> directory), not served at start: hot-swap material.
    versions: dict[str, Path] = field(default_factory=dict)


def load_kit(kit_dir: Path, plumbing: bool = False) -> KitModel:
    """The demo kit's base model (or the Qwen3 plumbing model) with its adapters."""
    manifest_path = kit_dir / "kit.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: build the kit with `lorag demo-kit build --out {kit_dir}`")
    manifest = json.loads(manifest_path.read_text())
    part = manifest["plumbing"] if plumbing else manifest
    return KitModel(
        name=part["base"]["name"],
        path=kit_dir / part["base"]["path"],
        adapters={a["name"]: kit_dir / a["path"] for a in part["adapters"]},
        versions={v["name"]: kit_dir / v["path"] for v in part.get("versions", [])},
    )
