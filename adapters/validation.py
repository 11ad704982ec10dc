"""Checks a LoRA adapter directory before anything in the gateway or the engine changes.

A new version is loaded only when it is a PEFT LoRA adapter for the engine's base model, of a rank the engine's
LoRA slots can hold, with readable weights, inside one of the allowed roots (after resolving symlinks, so
neither `..` nor a link can reach outside them). vLLM would refuse some of these itself, but only after the
gateway had begun a swap, and it says nothing about where a path points.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.base_match import base_mismatch

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_HASH_CHUNK = 1 << 20


class AdapterInvalid(ValueError):
    """The adapter cannot be used; the message says why, `field` names the request field at fault."""

    def __init__(self, message: str, field: str = "path") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learnt: the resolved directory, rank, base model and a hash of the content."""

    path: Path
    rank: int
    base_model: str
    weights: Path
    digest: str

    @property
    def short_hash(self) -> str:
        return self.digest[:8]


def inside_roots(path: str | Path, roots: Sequence[Path]) -> Path:
    """`path` resolved (symlinks followed), if it exists and lies inside one of `roots`."""
    if not roots:
        raise AdapterInvalid("no adapter roots are configured (LORAG_ADAPTER_ROOTS): loading adapters is off")
    candidate = Path(path).expanduser()
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise AdapterInvalid(f"adapter path {str(path)!r} does not exist") from None
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    # The roots are the server's layout: the message names the setting, not the directories.
    raise AdapterInvalid(f"adapter path {str(path)!r} is outside the allowed roots (LORAG_ADAPTER_ROOTS)")


def validate_adapter(
    path: str | Path, roots: Sequence[Path], engine_bases: Sequence[str], max_rank: int
) -> AdapterInfo:
    """Check an adapter directory and hash its content; raise AdapterInvalid with the first problem found."""
    directory = inside_roots(path, roots)
    if not directory.is_dir():
        raise AdapterInvalid(f"adapter path {str(path)!r} is not a directory")
    config_path = _member(directory, CONFIG, roots)
    if config_path is None:
        raise AdapterInvalid(f"{str(path)!r} has no {CONFIG}: not a PEFT adapter")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        # The exception's text would carry the resolved path: its kind is enough for the client.
        raise AdapterInvalid(f"{CONFIG} cannot be read ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise AdapterInvalid(f"{CONFIG} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise AdapterInvalid(f"{CONFIG} has peft_type {config.get('peft_type')!r}; only LORA adapters are served")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise AdapterInvalid(f"{CONFIG} has no valid rank r (got {rank!r})")
    if rank > max_rank:
        raise AdapterInvalid(f"adapter rank {rank} exceeds the engine's max_lora_rank {max_rank}")
    base = config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise AdapterInvalid(f"{CONFIG} does not name its base model (base_model_name_or_path)")
    weights = next((w for name in WEIGHTS if (w := _member(directory, name, roots)) is not None), None)
    if weights is None:
        raise AdapterInvalid(f"{str(path)!r} has no weights ({' or '.join(WEIGHTS)})")
    shapes = _check_safetensors(weights, max_rank) if weights.suffix == ".safetensors" else {}
    if engine_bases and (why := base_mismatch(base, shapes, engine_bases)) is not None:
        raise AdapterInvalid(f"adapter was trained on {base!r}, not on the engine's model: {why}")
    return AdapterInfo(directory, rank, base, weights, _digest(config_path, weights))


def _member(directory: Path, name: str, roots: Sequence[Path]) -> Path | None:
    """A file of the adapter directory, refused if it is a link to somewhere outside the roots."""
    candidate = directory / name
    if not candidate.exists():
        return None
    inside_roots(candidate, roots)
    return candidate.resolve()


def _check_safetensors(weights: Path, max_rank: int) -> dict[str, list[int]]:
    """The header parses, every tensor is a LoRA A/B matrix, and no A matrix (one row per rank) is wider than
    the engine's slots: a config's `rank_pattern` can give single modules a higher rank than `r`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="numpy") as tensors:
            names = list(tensors.keys())
            shapes = {name: tensors.get_slice(name).get_shape() for name in names}
    except (OSError, SafetensorError) as exc:
        raise AdapterInvalid(f"the weights cannot be read ({type(exc).__name__})") from None
    if not names:
        raise AdapterInvalid("the weights file holds no tensors")
    for name, shape in shapes.items():
        if "lora_A" in name and (len(shape) != 2 or shape[0] > max_rank):
            raise AdapterInvalid(f"tensor {name} has shape {shape}: rank above the engine's max_lora_rank {max_rank}")
        if "lora_" not in name:
            raise AdapterInvalid(f"tensor {name} is not a LoRA weight: full-weight modules are not served")
    return {name: list(shape) for name, shape in shapes.items()}


def _digest(config: Path, weights: Path) -> str:
    """SHA-256 over the config and the weights: one version per distinct content."""
    digest = hashlib.sha256()
    for part in (config, weights):
        with part.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
