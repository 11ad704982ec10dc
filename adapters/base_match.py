"""Whether an adapter was trained for the engine's base model, judged by the model's identity, not its name.

Names say little: the demo kit keeps both of its models in directories called `base`, and an adapter's
`base_model_name_or_path` is often a training machine's temporary directory. Where the engine's model directory
is readable, its `config.json` decides: the adapter's named base, when that is a readable model too, must have the
same architecture and sizes, and every LoRA tensor must fit the model (layer index below its layer count, A's
input and B's output widths among its projection widths). Only where no config is readable (the engine serves a
hub id from another machine) does the name decide: the same id or path, or the same directory name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The config fields that tell two models apart; equal on both sides means the adapter's weights fit.
IDENTITY = (
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def model_config(name_or_path: str) -> dict[str, Any] | None:
    """The `config.json` of a local model directory, or None when `name_or_path` is not one (a hub id)."""
    try:
        config = json.loads((Path(name_or_path).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: config.get(key) for key in IDENTITY}


def _widths(config: Mapping[str, Any]) -> set[int]:
    """Every input or output width a LoRA tensor of this model can have."""
    hidden = int(config.get("hidden_size") or 0)
    heads = int(config.get("num_attention_heads") or 1)
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    widths = {hidden, heads * head_dim, kv_heads * head_dim, int(config.get("vocab_size") or 0)}
    widths.add(int(config.get("intermediate_size") or 0))
    widths.add(int(config.get("moe_intermediate_size") or 0))
    return widths - {0}


def misfit(shapes: Mapping[str, Sequence[int]], config: Mapping[str, Any]) -> str | None:
    """Why these LoRA tensors cannot belong to a model with `config`, or None when they fit."""
    layers = int(config.get("num_hidden_layers") or 0)
    widths = _widths(config)
    for name, shape in shapes.items():
        if (m := _LAYER.search(name)) and layers and int(m.group(1)) >= layers:
            return f"tensor {name} is for layer {m.group(1)}; the engine's model has {layers} layers"
        if len(shape) != 2:
            continue
        width = shape[1] if "lora_A" in name else shape[0] if "lora_B" in name else None
        if width is not None and width not in widths:
            return f"tensor {name} has shape {list(shape)}: no projection of the engine's model is {width} wide"
    return None


def base_mismatch(adapter_base: str, shapes: Mapping[str, Sequence[int]], engine_bases: Sequence[str]) -> str | None:
    """Why the adapter does not fit any of the engine's models, or None when it fits one. The reason names
    architectures and sizes, never the engine's paths."""
    configs = [c for base in engine_bases if (c := model_config(base)) is not None]
    if not configs:
        return None if same_base(adapter_base, engine_bases) else "its base model is not the engine's model"
    mine = model_config(adapter_base)
    reasons: list[str] = []
    for config in configs:
        if mine is not None and identity(mine) != identity(config):
            reasons.append(f"its base model is a {_describe(mine)}, the engine serves a {_describe(config)}")
        elif (why := misfit(shapes, config)) is not None:
            reasons.append(why)
        else:
            return None
    return reasons[0]


def _describe(config: Mapping[str, Any]) -> str:
    arch = ",".join(config.get("architectures") or [str(config.get("model_type"))])
    return f"{arch} (hidden size {config.get('hidden_size')}, {config.get('num_hidden_layers')} layers)"


def same_base(adapter_base: str, engine_bases: Sequence[str]) -> bool:
    """Whether the names agree: the same hub id or path, or the same last path component (a model directory
    copied elsewhere keeps its name). Only for engines whose config cannot be read."""
    mine = adapter_base.rstrip("/")
    for base in engine_bases:
        theirs = base.rstrip("/")
        if mine == theirs or Path(mine).name == Path(theirs).name:
            return True
    return False
