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

from adapters import training
from adapters.demo_kit import base_model, data, plumbing, versions, voices
from adapters.training import LoraTrainConfig, train_lora

KIT_VERSION = 1
# Settings chosen from the measurements in BENCHMARKS.md (quality against minutes on 2 CPU cores): 240
# conversations in 120 updates of 2, LoRA on the upper 18 of 30 layers (backward stops there), copied facts
# weighted 3 in the loss, 70 % of questions about listed products, up to 4 questions per facts block: as good as
# the upper 20 layers without the weight over 54 seed x adapter runs on a GPU sweep, for ~10 % less CPU time a step.
TRAIN_CONFIG = LoraTrainConfig(
    rank=16,
    alpha=32,
    steps=120,
    batch_size=2,
    max_length=640,
    learning_rate=2e-3,
    warmup_steps=2,
    layers=list(range(12, 30)),
    copy_weight=3.0,
)
# Share of training questions about a product in the facts block (the held-out set keeps 60 %): quoting the right
# line among several is what the adapters get wrong, refusing fakes they learn fast.
TRAIN_KNOWN_SHARE = 0.7
# Questions per facts block: up to 4 instead of 5 trains as well and cuts a fifth of the attention cost.
TRAIN_MAX_TURNS = 4
# Half the facts blocks hold look-alikes (same brand, and series or model code), as a retriever returns them for
# one name: trained on random blocks only, the adapters got 6 % of questions about a product among look-alikes
# wrong (a look-alike's price, or a refusal); half brings that to 4 % and keeps the plain held-out score (GPU
# sweep rounds 9-10, BENCHMARKS.md).
TRAIN_LOOK_ALIKES = 0.5
TRAIN_SEED = 11
PLUMBING_ADAPTERS = ["plumb-a", "plumb-b"]
# What produces an adapter: the trainer's code and the conversations it trains on. The conversations themselves go
# into the fingerprint (they take milliseconds to generate), not their generators' source: a change to the facts
# rendering or the catalog that leaves every training conversation alike keeps the kit.


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "__file__"):
            digest.update(Path(part.__file__).read_bytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _stable(info: dict[str, Any]) -> dict[str, Any]:
    """A part's build info without what changes between runs of the same build, for use in a fingerprint."""
    return {k: v for k, v in info.items() if k not in ("cached", "build_seconds", "train_seconds", "source")}


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


def training_data(voice: voices.Voice, count: int, seed: int = TRAIN_SEED) -> list[training.Conversation]:
    """The kit's training conversations for one voice, as its adapters are trained on them."""
    return data.training_conversations(
        voice,
        count,
        seed=seed,
        max_turns=TRAIN_MAX_TURNS,
        known_share=TRAIN_KNOWN_SHARE,
        look_alikes=TRAIN_LOOK_ALIKES,
    )


def _train(
    base_dir: Path,
    voice: voices.Voice,
    config: LoraTrainConfig,
    seed: int,
    tmp: Path,
    init_adapter: Path | None = None,
) -> dict[str, Any]:
    conversations = training_data(voice, config.steps * config.batch_size, seed)
    with tqdm(total=config.steps, desc=f"training {voice.name}", unit="step", file=sys.stderr) as bar:

        def progress(step: int, total: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)

        report = train_lora(base_dir, conversations, tmp, config, progress=progress, init_adapter=init_adapter)
    return {"train_seconds": report.seconds, "steps": report.steps, "last_loss": report.last_loss}


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
            return _train(base_dir, voice, TRAIN_CONFIG, TRAIN_SEED, tmp)

        info = _cached(
            out / "adapters" / name,
            _fingerprint(
                KIT_VERSION,
                name,
                TRAIN_CONFIG.model_dump(),
                TRAIN_KNOWN_SHARE,
                TRAIN_MAX_TURNS,
                TRAIN_LOOK_ALIKES,
                _stable(base_info),
                training,
                training_data(voice, TRAIN_CONFIG.steps * TRAIN_CONFIG.batch_size, TRAIN_SEED),
            ),
            train,
        )
        log(f"  {'cached' if info['cached'] else 'trained'}: {info['steps']} steps in {info['train_seconds']} s")
        adapters.append({"name": name, "path": f"adapters/{name}", "rank": TRAIN_CONFIG.rank, **info})

    built = {a["name"]: a for a in adapters}
    later: list[dict[str, Any]] = []
    for version in versions.VERSIONS.values():
        if version.adapter not in built:
            continue
        log(f"version {version.name} of {version.adapter}: {version.voice.signature!r}")

        def retrain(tmp: Path, version: versions.Version = version) -> dict[str, Any]:
            init = out / "adapters" / version.adapter
            return _train(base_dir, version.voice, version.config, version.seed, tmp, init_adapter=init)

        info = _cached(
            out / "versions" / version.name,
            _fingerprint(
                KIT_VERSION,
                version.name,
                version.voice,
                version.config.model_dump(),
                version.seed,
                TRAIN_KNOWN_SHARE,
                TRAIN_MAX_TURNS,
                TRAIN_LOOK_ALIKES,
                _stable(built[version.adapter]),
                training,
                training_data(version.voice, version.config.steps * version.config.batch_size, version.seed),
                versions,
            ),
            retrain,
        )
        log(f"  {'cached' if info['cached'] else 'trained'}: {info['steps']} steps in {info['train_seconds']} s")
        later.append(
            {
                "name": version.name,
                "adapter": version.adapter,
                "path": f"versions/{version.name}",
                "signature": version.voice.signature,
                "rank": version.config.rank,
                **info,
            }
        )

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
        "versions": later,
        "plumbing": {
            "base": {"name": plumbing.PLUMBING_NAME, "path": "plumbing/base"},
            "adapters": [{"name": n, "path": f"plumbing/adapters/{n}", "rank": 8} for n in PLUMBING_ADAPTERS],
            **plumbing_info,
        },
    }
    (out / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"kit ready: {out / 'kit.json'}")
    return manifest
