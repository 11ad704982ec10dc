"""`lorag train dataset`: a fine-tuning dataset from any catalog lorag ingests, with a data card beside it.

The split is by product: eval samples ask about products no training sample names or shows in its facts block,
so the eval split measures reading facts, not remembering them. Written to DIR: train.jsonl, eval.jsonl (one
sample a line: kind, product, messages, expect) and card.json (counts per kind and split, the mix, the persona).
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from adapters.mix import KINDS, Mix, Shape
from adapters.persona import Persona
from adapters.samples import Generator, Pool, Sample
from retrieval.catalog import Product
from retrieval.loaders import ColumnMapping, RowError, read_catalog

CARD = "card.json"


class DatasetError(ValueError):
    """The dataset cannot be made as asked; the message says why."""


def load_products(path: Path, mapping: ColumnMapping | None = None) -> tuple[list[Product], list[RowError]]:
    """The catalog's products (first row wins on a repeated id) and the rows that could not be read."""
    if not path.is_file():
        raise DatasetError(f"catalog {path} does not exist")
    products: dict[str, Product] = {}
    errors: list[RowError] = []
    for row in read_catalog(path, mapping):
        if isinstance(row, RowError):
            errors.append(row)
        else:
            products.setdefault(row.product.id, row.product)
    if not products:
        raise DatasetError(f"catalog {path} has no readable product ({len(errors)} bad rows)")
    return list(products.values()), errors


def load_domain(path: Path | None) -> list[dict[str, str]]:
    """The business's own Q&A: a YAML/JSON list, or JSONL, of {question, answer}."""
    if path is None:
        return []
    text = path.read_text(encoding="utf-8")
    try:
        items = (
            [json.loads(x) for x in text.splitlines() if x.strip()] if path.suffix == ".jsonl" else yaml.safe_load(text)
        )
    except (ValueError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: not valid {'JSONL' if path.suffix == '.jsonl' else 'YAML/JSON'}: {exc}") from None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("question"), str) and isinstance(i.get("answer"), str) for i in items
    ):
        raise DatasetError(f"{path}: domain knowledge is a list of {{question, answer}} entries")
    return [{"question": i["question"], "answer": i["answer"]} for i in items]


def split_products(products: list[Product], eval_share: float, seed: int) -> tuple[list[Product], list[Product]]:
    """(train, eval) products; eval holds `eval_share` of them, at least one, and training at least one."""
    if len(products) < 2:
        raise DatasetError("a train/eval split by product needs at least 2 products")
    order = sorted(products, key=lambda p: p.id)
    random.Random(seed).shuffle(order)
    n_eval = min(len(order) - 1, max(1, round(len(order) * eval_share)))
    return order[n_eval:], order[:n_eval]


def _generate(gen: Generator, counts: dict[str, int], desc: str) -> list[Sample]:
    plan = [kind for kind in KINDS for _ in range(counts.get(kind, 0))]
    gen.rng.shuffle(plan)
    return [gen.make(kind) for kind in tqdm(plan, desc=desc, unit="sample", file=sys.stderr, leave=False)]


def build_dataset(products: list[Product], out: Path, **options: Any) -> dict[str, Any]:
    """Write train.jsonl, eval.jsonl and card.json under `out` (options: those of make_dataset); the card."""
    splits, card = make_dataset(products, **options)
    out.mkdir(parents=True, exist_ok=True)
    for name, samples in splits.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def make_dataset(
    products: list[Product],
    *,
    total: int = 2000,
    eval_size: int = 200,
    mix: Mix | None = None,
    persona: Persona | None = None,
    domain: list[dict[str, str]] | None = None,
    eval_share: float = 0.1,
    seed: int = 0,
    source: str = "",
    shape: Shape | None = None,
) -> tuple[dict[str, list[Sample]], dict[str, Any]]:
    """The train and eval samples, and the data card, without writing them."""
    mix, persona, domain, shape = mix or Mix(), persona or Persona(), domain or [], shape or Shape()
    weights = dict(mix.weights)
    if not domain and weights.get("domain", 0) > 0:
        weights["domain"] = 0  # no knowledge supplied: no domain samples, and the card says so
        mix = Mix(weights=weights, floor=mix.floor)
    train_products, eval_products = split_products(products, eval_share, seed)
    rng = random.Random(seed)
    train_gen = Generator(Pool(train_products, train_products, sold=products), persona, rng, domain, shape)
    # Eval questions name eval products; their facts blocks hold whatever the retriever would find in the catalog.
    eval_gen = Generator(Pool(eval_products, products), persona, random.Random(seed + 1), domain, shape)
    eval_counts = {k: n for k, n in mix.counts(eval_size).items() if k != "domain"}
    splits = {
        "train": _generate(train_gen, mix.counts(total), "train samples"),
        "eval": _generate(eval_gen, eval_counts, "eval samples"),
    }
    card = {
        "source": source,
        "seed": seed,
        "products": {"train": len(train_products), "eval": len(eval_products)},
        "eval_products": [p.id for p in eval_products],
        "counts": {name: dict(Counter(s["kind"] for s in samples)) for name, samples in splits.items()},
        "samples": {name: len(samples) for name, samples in splits.items()},
        "mix": mix.weights,
        "persona": persona.model_dump(),
        "shape": shape.model_dump(),
        "domain_items": len(domain),
    }
    return splits, card


def read_split(data: Path, split: str) -> list[Sample]:
    """The samples of one split of a dataset directory."""
    path = data / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path} does not exist: make the dataset with `lorag train dataset`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_card(data: Path) -> dict[str, Any]:
    """The data card of a dataset directory ({} when it has none)."""
    path = data / CARD
    card: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return card
