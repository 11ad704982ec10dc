"""`lorag demo-kit build`: base model, three trained adapters and the Qwen3 plumbing model, cached by fingerprint.

The adapters are one use of the fine-tuning kit: for each assistant, `lorag train dataset`'s generator
(adapters.dataset) makes its samples from a catalog of the demo domain's training pool in the assistant's persona
(adapters.demo_kit.voices), and `lorag train lora`'s path (adapters.finetune) trains and records the adapter
(run.json, losses.csv with the eval loss, loss.png). Each part is rebuilt only when what produces it changed (the
trainer's code, its settings, the training conversations), so `make` can call this on every run and pay the ~15
minutes of CPU training once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters import training
from adapters.dataset import build_dataset, make_dataset
from adapters.demo_kit import base_model, plumbing, versions, voices
from adapters.finetune import run_lora
from adapters.mix import Mix, Shape
from adapters.persona import Persona
from adapters.training import LoraTrainConfig
from retrieval.catalog import Product
from retrieval.demo_catalog import generate, iter_jsonl

KIT_VERSION = 1
# Settings chosen from the measurements in BENCHMARKS.md (quality against minutes on 2 CPU cores): 240
# conversations in 120 updates of 2, LoRA on the upper 20 of 30 layers (backward stops there), copied facts
# weighted 3 in the loss. On the fine-tuning kit's samples the upper 20 layers with 15 % of the multi-turn chats
# opening on a fake (TRAIN_SHAPE) passed most often in a GPU sweep of 17 candidates (results/2026-12-02-kit-sweep-r16)
# and met both targets on every adapter built on 2 cores; the upper 18 there missed them.
# The eval loss on 8 samples of the eval split at steps 0, 60 and 120 costs ~9 s an adapter (2 cores).
TRAIN_CONFIG = LoraTrainConfig(
    rank=16,
    alpha=32,
    steps=120,
    batch_size=2,
    max_length=640,
    learning_rate=2e-3,
    warmup_steps=2,
    layers=list(range(10, 30)),
    copy_weight=3.0,
    eval_every=60,
)
# The kit's assistants answer questions about products, several per facts block: most samples are multi-turn
# (a listed product, then up to 3 follow-ups), with single questions and fakes beside, and a few of each safety
# kind. About 70 % of the answers quote a listed product (the held-out set asks 60 %): quoting the right line
# among several is what the adapters get wrong, refusing fakes they learn fast.
TRAIN_MIX = Mix(
    weights={
        "multi_turn": 0.75,
        "fake_product": 0.12,
        "product_qa": 0.04,
        "recommendation": 0.03,
        "price_manipulation": 0.02,
        "negotiation": 0.02,
        "prompt_injection": 0.01,
        "off_topic": 0.01,
    }
)
# Half the facts blocks hold look-alikes (same brand, series or model code), as a retriever returns them for one
# name, half unrelated products: trained on random blocks only, the adapters got 6 % of questions about a product
# among look-alikes wrong; half brings that to 4 % and keeps the plain held-out score (GPU sweep rounds 9-10,
# BENCHMARKS.md). Every answer about a product quotes price and stock, so no stock-only follow-ups. Fakes are
# near misses (another model code) or names nothing in the block resembles, as the held-out set asks them, and
# 15 % of the multi-turn chats open on one: the held-out set asks most fakes as a first question.
TRAIN_SHAPE = Shape(
    look_alikes=0.5,
    brandless=0.1,
    follow_up_stock=0.0,
    follow_up_fakes=0.4,
    fake_unrelated=0.5,
    open_fakes=0.15,
)
# The demo domain's training pool (brands the demo catalog and the held-out questions never use); a tenth of its
# products are kept for the eval split, whose loss is recorded during training.
CATALOG_SIZE = 600
CATALOG_SEED = 11
EVAL_SAMPLES = 8
TRAIN_SEED = 11
PLUMBING_ADAPTERS = ["plumb-a", "plumb-b"]
# What produces an adapter: the trainer's code and the conversations it trains on. The conversations themselves go
# into the fingerprint (they take milliseconds to generate), not their generators' source: a change to the facts
# rendering or the generator that leaves every training conversation alike keeps the kit.


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
    varying = ("cached", "build_seconds", "train_seconds", "eval_seconds", "source", "eval_loss_start", "eval_loss")
    return {k: v for k, v in info.items() if k not in varying}


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


def training_catalog() -> list[Product]:
    """The catalog the kit's datasets are made from: products of the demo domain's training pool."""
    return generate("train", CATALOG_SIZE, CATALOG_SEED)


def dataset_options(
    voice: Persona, count: int, seed: int = TRAIN_SEED, mix: Mix = TRAIN_MIX, shape: Shape = TRAIN_SHAPE
) -> dict[str, Any]:
    """What `lorag train dataset` is given for one assistant's data (adapters.dataset.make_dataset's options)."""
    return {
        "total": count,
        "eval_size": EVAL_SAMPLES,
        "mix": mix,
        "persona": voice,
        "shape": shape,
        "seed": seed,
        "source": f"demo domain, training pool ({CATALOG_SIZE} products, seed {CATALOG_SEED})",
    }


def training_data(
    voice: Persona, count: int, seed: int = TRAIN_SEED, mix: Mix = TRAIN_MIX, shape: Shape = TRAIN_SHAPE
) -> list[training.Conversation]:
    """The kit's training conversations for one assistant (another mix or shape: a recipe sweep's candidate)."""
    splits, _card = make_dataset(training_catalog(), **dataset_options(voice, count, seed, mix, shape))
    return [sample["messages"] for sample in splits["train"]]


def _write_data(out: Path, name: str, voice: Persona, count: int, seed: int) -> Path:
    """The assistant's dataset directory (train.jsonl, eval.jsonl, card.json), as `lorag train dataset` writes it."""
    build_dataset(training_catalog(), out / "data" / name, **dataset_options(voice, count, seed))
    return out / "data" / name


def _train(base_dir: Path, data_dir: Path, config: LoraTrainConfig, name: str, tmp: Path,
           init_adapter: Path | None = None) -> dict[str, Any]:  # fmt: skip
    # torch's own threads: the kit's build runs alone, where the shared-CPU policy costs 19 % a step.
    record = run_lora(base_dir, data_dir, tmp, config, eval_samples=EVAL_SAMPLES, name=name,
                      init_adapter=init_adapter, share_cpu=False)  # fmt: skip
    report = record["report"]
    return {
        "train_seconds": report["seconds"],
        "steps": report["steps"],
        "last_loss": report["last_loss"],
        "eval_loss_start": record["eval_loss_base"],
        "eval_loss": record["eval_loss"],
        "eval_seconds": report["eval_seconds"],
    }


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

    # The catalog the datasets come from, beside them: `lorag train dataset --catalog` on it makes the same samples.
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "catalog.jsonl").write_text("\n".join(iter_jsonl(training_catalog())) + "\n", encoding="utf-8")
    adapters: list[dict[str, Any]] = []
    for name in names or list(voices.VOICES):
        voice = voices.VOICES[name]
        log(f"adapter {name}: {voice.description}")
        data_dir = _write_data(out, name, voice, TRAIN_CONFIG.steps * TRAIN_CONFIG.batch_size, TRAIN_SEED)

        def train(tmp: Path, name: str = name, data_dir: Path = data_dir) -> dict[str, Any]:
            return _train(base_dir, data_dir, TRAIN_CONFIG, name, tmp)

        info = _cached(
            out / "adapters" / name,
            _fingerprint(
                KIT_VERSION,
                name,
                TRAIN_CONFIG.model_dump(),
                _stable(base_info),
                training,
                training_data(voice, TRAIN_CONFIG.steps * TRAIN_CONFIG.batch_size, TRAIN_SEED),
            ),
            train,
        )
        log(f"  {'cached' if info['cached'] else 'trained'}: {info['steps']} steps in {info['train_seconds']} s")
        adapters.append(
            {"name": name, "path": f"adapters/{name}", "data": f"data/{name}", "rank": TRAIN_CONFIG.rank, **info}
        )

    built = {a["name"]: a for a in adapters}
    later: list[dict[str, Any]] = []
    for version in versions.VERSIONS.values():
        if version.adapter not in built:
            continue
        log(f"version {version.name} of {version.adapter}: {version.voice.signature!r}")
        count = version.config.steps * version.config.batch_size
        data_dir = _write_data(out, version.name, version.voice, count, version.seed)

        def retrain(tmp: Path, version: versions.Version = version, data_dir: Path = data_dir) -> dict[str, Any]:
            init = out / "adapters" / version.adapter
            return _train(base_dir, data_dir, version.config, version.name, tmp, init_adapter=init)

        info = _cached(
            out / "versions" / version.name,
            _fingerprint(
                KIT_VERSION,
                version.name,
                version.voice.model_dump(),
                version.config.model_dump(),
                version.seed,
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
                "data": f"data/{version.name}",
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
