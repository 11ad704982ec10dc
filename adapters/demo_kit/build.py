"""`lorag demo-kit build`: base model, three trained adapters and the Qwen3 plumbing model, cached by fingerprint.

Each part is rebuilt only when what produces it changed (its settings and the source of the code that generates
its data), so `make` can call this on every run and pay the ~15 minutes of CPU training once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adapters.demo_kit import base_model, data, plumbing, voices
from adapters.training import LoraTrainConfig, train_lora
from retrieval import demo_catalog, facts

KIT_VERSION = 1
# Settings chosen from the measurements in BENCHMARKS.md (quality against minutes on 2 CPU cores).
TRAIN_CONFIG = LoraTrainConfig(
    rank=16, alpha=32, steps=30, batch_size=8, max_length=640, learning_rate=2e-3, warmup_steps=2
)
TRAIN_SEED = 11
PLUMBING_ADAPTERS = ["plumb-a", "plumb-b"]
_DATA_SOURCES = [data, voices, facts, demo_catalog]


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "__file__"):
            digest.update(Path(part.__file__).read_bytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _cached(out: Path, fingerprint: str, make: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run `make(tmp)` unless `out` holds a build with this fingerprint; swap the result in atomically."""
    stamp = out / ".fingerprint.json"
    if stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("fingerprint") == fingerprint:
            return dict(recorded["info"], cached=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    info = make(tmp)
    info["build_seconds"] = round(time.monotonic() - started, 1)
    (tmp / ".fingerprint.json").write_text(json.dumps({"fingerprint": fingerprint, "info": info}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return dict(info, cached=False)


def build_kit(out: Path, names: list[str] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build (or reuse) every part of the kit under `out` and write out/kit.json."""
    out.mkdir(parents=True, exist_ok=True)
    gguf = base_model.find_gguf()
    base_dir = out / "base"
    log(f"base model: {base_model.BASE_NAME} from {gguf.name}")
    base_info = _cached(
        base_dir,
        _fingerprint(KIT_VERSION, gguf.stat().st_size, base_model),
        lambda tmp: (base_model.convert_gguf(gguf, tmp), {"source": str(gguf)})[1],
    )
    log(f"  {'cached' if base_info['cached'] else 'built'} in {base_info['build_seconds']} s")

    adapters: list[dict[str, Any]] = []
    for name in names or list(voices.VOICES):
        voice = voices.VOICES[name]
        log(f"adapter {name}: {voice.description}")

        def train(tmp: Path, voice: voices.Voice = voice) -> dict[str, Any]:
            count = TRAIN_CONFIG.steps * TRAIN_CONFIG.batch_size
            conversations = data.training_conversations(voice, count, seed=TRAIN_SEED)
            with tqdm(total=TRAIN_CONFIG.steps, desc=f"training {voice.name}", unit="step", file=sys.stderr) as bar:

                def progress(step: int, total: int, loss: float) -> None:
                    bar.set_postfix(loss=f"{loss:.3f}")
                    bar.update(1)

                report = train_lora(base_dir, conversations, tmp, TRAIN_CONFIG, progress=progress)
            return {"train_seconds": report.seconds, "steps": report.steps, "last_loss": report.last_loss}

        info = _cached(
            out / "adapters" / name,
            _fingerprint(KIT_VERSION, name, TRAIN_CONFIG.model_dump(), base_info, *_DATA_SOURCES),
            train,
        )
        log(f"  {'cached' if info['cached'] else 'trained'}: {info['steps']} steps in {info['train_seconds']} s")
        adapters.append({"name": name, "path": f"adapters/{name}", "rank": TRAIN_CONFIG.rank, **info})

    log("plumbing model: tiny random Qwen3 with random adapters")
    plumbing_info = _cached(
        out / "plumbing",
        _fingerprint(KIT_VERSION, PLUMBING_ADAPTERS, plumbing),
        lambda tmp: (plumbing.build_plumbing(base_dir, tmp, PLUMBING_ADAPTERS), {})[1],
    )
    manifest = {
        "kit_version": KIT_VERSION,
        "base": {"name": base_model.BASE_NAME, "path": "base", **base_info},
        "adapters": adapters,
        "plumbing": {
            "base": {"name": plumbing.PLUMBING_NAME, "path": "plumbing/base"},
            "adapters": [{"name": n, "path": f"plumbing/adapters/{n}", "rank": 8} for n in PLUMBING_ADAPTERS],
            **plumbing_info,
        },
    }
    (out / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"kit ready: {out / 'kit.json'}")
    return manifest
