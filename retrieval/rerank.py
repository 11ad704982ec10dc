"""A small cross-encoder that reorders the retriever's top candidates, and how it is trained here.

No package ships cross-encoder weights and no model hub is reachable, so the reranker is trained locally: the
bundled all-MiniLM-L6-v2 encoder (retrieval.embedder) cut to its first `layers` transformer layers, with a linear
head over the mean of the pair's token states (see cross_encoder). Few layers and short pairs, because a
(question, product) pair pays every layer on every word piece, ten or twenty pairs per question, on a CPU thread.

Training data come from the demo domain's training pool (`demo_catalog.generate("train", ...)`: brands and series
the demo catalog never uses) and the labelled query generator over it, never from a set it is measured on.
Positives are the graded judgements (target grade / 2); hard negatives are the retriever's own top candidates that
are not judged relevant, i.e. the mistakes the reranker is there to fix.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval.catalog import Product
from retrieval.documents import DENSE_ATTRIBUTES, text_head

if TYPE_CHECKING:
    from retrieval.embedder import Embedder
    from retrieval.retriever import Hit, Retriever

CONFIG = "rerank.json"  # beside the weights: the text length the model was trained with
# The measured settings (BENCHMARKS.md): the most that fits 15 ms per 10 candidates on a CPU thread.
MAX_LENGTH = 32  # word pieces per pair: cost grows with it (loadtest.rerank_bench --sweep)
LAYERS = 1
EPOCHS = 4
LR = 3e-4
DESCRIPTION_CHARS = 160


class RerankerError(RuntimeError):
    """The reranker could not be loaded or trained."""


def rerank_text(product: Product) -> str:
    """What the cross-encoder reads of a product: name, SKU, category, key attributes, the description's head.

    Like retrieval.documents.dense_text, but with the SKU (questions name it, and a cross-encoder, unlike a
    vector, can match it verbatim) and a shorter description, since every word piece is paid per candidate.
    """
    attrs = "; ".join(f"{k}: {v}" for k, v in list(product.attributes.items())[:DENSE_ATTRIBUTES])
    parts = [
        f"{product.name} ({product.id})",
        product.category or "",
        attrs,
        text_head(product.description, DESCRIPTION_CHARS),
    ]
    return ". ".join(p for p in parts if p)


HEAD = "head.pt"  # the scoring layer; the encoder is saved as a transformers model beside it


def cross_encoder(encoder: Any) -> Any:
    """A scorer over `encoder` (a transformers BertModel): one linear layer over the mean of the pair's token states.

    Mean pooling, not the [CLS] token that transformers' sequence classifiers read: MiniLM was trained to put its
    meaning in the mean of its tokens, so the new head starts on a representation that already means something,
    which matters with a few minutes of training on a few thousand pairs.
    """
    import torch

    class CrossEncoder(torch.nn.Module):  # type: ignore[misc]  # torch.nn.Module is Any to mypy here
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(int(encoder.config.hidden_size), 1)

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> torch.Tensor:
            states = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            logits: torch.Tensor = self.head(pooled)[:, 0]
            return logits

    return CrossEncoder()


class Reranker:
    """Scores (question, product) pairs with a cross-encoder and reorders hits by that score."""

    def __init__(self, path: Path | str, *, threads: int | None = None, int8: bool = False) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]  # untyped in some versions
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide, as for the embedder
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise RerankerError(f"{path} is not a reranker directory (no {CONFIG})")
        self.path = path
        self.max_length = int(json.loads((path / CONFIG).read_text())["max_length"])
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model: Any = cross_encoder(
            AutoModel.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True)
        )
        self._model.head.load_state_dict(torch.load(path / HEAD, weights_only=True))
        self._model.eval()
        self.parameters = sum(p.numel() for p in self._model.parameters())  # before int8 hides the Linear ones
        self.int8 = int8
        if int8:
            # Linear layers are nearly all of the cost; int8 weights with dynamically quantised activations run
            # them on the CPU's integer dot-product units (VNNI) at about twice the fp32 speed.
            self._model = torch.ao.quantization.quantize_dynamic(self._model, {torch.nn.Linear}, dtype=torch.qint8)

    def scores(self, query: str, products: Sequence[Product]) -> list[float]:
        """One relevance logit per product (higher is more relevant), in one forward pass."""
        if not products:
            return []
        import torch

        batch = self._tokenizer(
            [query] * len(products),
            [rerank_text(p) for p in products],
            truncation="only_second",  # the question is short; the product's tail is what may be cut
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            logits = self._model(**batch)
        return [float(x) for x in logits]

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """`hits` by cross-encoder score, best first, the reranker's score in `score`; ties keep the retriever's
        order (the sort is stable), so the result is the same for the same input."""
        scored = self.scores(query, [h.product for h in hits])
        order = sorted(range(len(hits)), key=lambda i: -scored[i])
        ranked = [replace(hits[i], score=scored[i]) for i in order]
        return ranked if top_k is None else ranked[:top_k]


@contextmanager
def retriever_over(products: Sequence[Product], embedder: Embedder) -> Iterator[Retriever]:
    """A Retriever (default settings) over a fresh local store holding `products`, removed afterwards."""
    from retrieval.ingest import filled_store
    from retrieval.retriever import Retriever
    from retrieval.settings import RetrievalSettings

    with tempfile.TemporaryDirectory(prefix="lorag-rerank-") as tmp:
        store, close, _ = filled_store(products, embedder, Path(tmp))
        try:
            yield Retriever.from_settings(RetrievalSettings(), store, embedder)
        finally:
            close()


@dataclass(frozen=True)
class Pair:
    """One training example: question, product text, target in [0, 1]."""

    query: str
    text: str
    target: float


def training_pairs(
    embedder: Embedder,
    seeds: Sequence[int],
    *,
    products: int = 300,
    candidates: int = 20,
    positives: int = 4,
    negatives: int = 8,
) -> list[Pair]:
    """Graded positives and the retriever's unjudged top candidates as negatives, over one generated training
    catalog per seed (its queries from the same seed). Per question at most `positives` judged products (attribute
    questions judge whole categories) and `negatives` hard ones, the highest-ranked first."""
    from retrieval.demo_catalog import generate
    from retrieval.queries import labelled_queries

    pairs: list[Pair] = []
    for seed in seeds:
        catalog = generate("train", products, seed)
        by_id = {p.id: p for p in catalog}
        rng = random.Random(seed)
        with retriever_over(catalog, embedder) as retriever:
            for q in labelled_queries(catalog, seed=seed):
                judged = {d: g for d, g in q.relevance.items() if g > 0}
                if not judged:
                    continue  # questions about products not held: nothing to rank
                hits = retriever.retrieve(q.text, top_k=candidates).hits
                found = [h.product.id for h in hits if h.product.id in judged]
                rest = [d for d in judged if d not in found]
                # Positives the retriever found first (they are what reranking reorders), then others at random.
                chosen = (found + rng.sample(rest, len(rest)))[:positives]
                pairs += [Pair(q.text, rerank_text(by_id[d]), judged[d] / 2) for d in chosen]
                wrong = [h.product for h in hits if h.product.id not in judged][:negatives]
                pairs += [Pair(q.text, rerank_text(p), 0.0) for p in wrong]
    return pairs


@dataclass(frozen=True)
class TrainReport:
    """What train() did."""

    out: Path
    layers: int
    parameters: int
    pairs: int
    positives: int
    steps: int
    seconds: float


def train(
    pairs: Sequence[Pair],
    out: Path,
    *,
    source: str = "all-MiniLM-L6-v2",
    layers: int = LAYERS,
    epochs: int = EPOCHS,
    batch_size: int = 32,
    lr: float = LR,
    max_length: int = MAX_LENGTH,
    seed: int = 0,
    max_steps: int | None = None,
) -> TrainReport:
    """Fine-tune a `layers`-layer cross-encoder from `source`'s encoder on `pairs` (binary cross-entropy on the
    graded targets) and save it, loadable by Reranker, at `out`."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from retrieval.embedder import resolve_model

    if not pairs:
        raise RerankerError("no training pairs")
    hf_logging.set_verbosity_error()  # "weights not used" (MiniLM's later layers) is what is asked for
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]  # untyped in some versions
    torch.manual_seed(seed)
    path = resolve_model(source)
    tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # num_hidden_layers=N keeps the first N layers of the checkpoint; the rest are not loaded.
    model = cross_encoder(
        AutoModel.from_pretrained(path, num_hidden_layers=layers, add_pooling_layer=False, local_files_only=True)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    total = epochs * -(-len(pairs) // batch_size)
    total = max_steps if max_steps is not None else total  # max_steps overrides epochs (tests use it)
    # Linear decay to zero after a short warm-up: the new head starts random, the encoder does not.
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started = time.perf_counter()
    step = 0
    while step < total:
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            if step >= total:
                break
            batch = [pairs[i] for i in order[start : start + batch_size]]
            enc = tokenizer(
                [p.query for p in batch],
                [p.text for p in batch],
                truncation="only_second",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(**enc)
            loss = loss_fn(logits, torch.tensor([p.target for p in batch], dtype=logits.dtype))
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
    seconds = time.perf_counter() - started
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(out))
    torch.save(model.head.state_dict(), out / HEAD)
    tokenizer.save_pretrained(str(out))
    meta = {"max_length": max_length, "source": source, "layers": layers, "pairs": len(pairs), "steps": step}
    (out / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return TrainReport(
        out=out,
        layers=layers,
        parameters=sum(p.numel() for p in model.parameters()),
        pairs=len(pairs),
        positives=sum(p.target > 0 for p in pairs),
        steps=step,
        seconds=seconds,
    )


def distill_reranker(
    out: Path,
    *,
    embedder: Embedder | None = None,
    seeds: Sequence[int] = (101, 102, 103),
    layers: int = LAYERS,
    epochs: int = EPOCHS,
    max_length: int = MAX_LENGTH,
    lr: float = LR,
) -> TrainReport:
    """Training pairs from the demo domain's training pool (one catalog per seed), then train() on them."""
    from retrieval.embedder import Embedder

    embedder = embedder or Embedder(batching=False)
    pairs = training_pairs(embedder, seeds)
    return train(pairs, out, layers=layers, epochs=epochs, max_length=max_length, lr=lr)
