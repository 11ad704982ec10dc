"""How well the 'not in the catalog' signal does on labelled questions: precision, recall, and what it got wrong.

A false flag calls a product the catalog holds unknown, so the assistant refuses a sale; a miss lets it talk about
a product that is not there. The tables list the questions behind both, with the judged product beside a false
flag, so a reader can tell the retriever's mistakes from the labels' (real relevance labels are not all right).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from retrieval import lexical
from retrieval.beir import Dataset
from retrieval.question import parse
from retrieval.retriever import Retriever, named_alike, names_category

THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55)
LISTED = 12  # wrong verdicts listed per table


@dataclass
class UnknownCase:
    """One query's truth and the retriever's verdict, with what the verdict rested on."""

    truth: bool
    predicted: bool
    path: str  # code, name or generic
    best_similarity: float
    names_category: bool  # a generic question naming a top hit's category is never unknown
    covered: bool = False  # a top hit holds every content word of the question (the lexical check)
    text: str = ""  # the question, to read what was flagged or missed
    named: bool = False  # a top hit's name shares a content word with the question
    reason: str = ""  # the retriever's reason for a flag
    judged: str = ""  # the name of the product judged most relevant, for a question about a real one
    top: str = ""  # the name of the retriever's first hit


def unknown_case(retriever: Retriever, text: str, truth: bool, judged: str = "") -> UnknownCase:
    """Ask the retriever and record its verdict with the evidence of each check."""
    result = retriever.retrieve(text)
    question = parse(text)
    path = "code" if question.codes else "name" if question.names else "generic"
    best = max((h.similarity or 0.0 for h in result.hits), default=0.0)
    words = set(lexical.tokenize(text))
    return UnknownCase(
        truth,
        result.unknown,
        path,
        best,
        any(names_category(h.product, words) for h in result.hits),
        Retriever._covered(text, result.hits),
        text,
        named_alike(text, result.hits),
        result.reason,
        judged,
        result.hits[0].product.name if result.hits else "",
    )


def judged_name(dataset: Dataset, qid: str) -> str:
    """The product judged most relevant to a query, and how many more share its grade ("" for a missing product)."""
    grades = dataset.qrels.get(qid, {})
    top = max(grades.values(), default=0)
    best = [pid for pid, grade in grades.items() if grade == top and grade > 0]
    if not best:
        return ""
    name = next((p.name for p in dataset.products if p.id == best[0]), best[0])
    name = name if len(name) <= 80 else name[:79] + "…"  # the count of the others must survive the table's cut
    return f"{name} (+{len(best) - 1} more)" if len(best) > 1 else name


def _pr(pred: list[bool], truth: list[bool]) -> tuple[str, str, int, int, int]:
    tp = sum(p and t for p, t in zip(pred, truth, strict=True))
    fp = sum(p and not t for p, t in zip(pred, truth, strict=True))
    fn = sum(t and not p for p, t in zip(pred, truth, strict=True))
    precision = f"{tp / (tp + fp):.3f}" if tp + fp else "n/a"  # nothing flagged
    recall = f"{tp / (tp + fn):.3f}" if tp + fn else "n/a"  # nothing to flag
    return precision, recall, tp, fp, fn


def _cell(text: str, width: int = 90) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[: width - 1] + "…"


def _listing(title: str, cases: list[UnknownCase], head: str, cells: Callable[[UnknownCase], str]) -> list[str]:
    """Markdown lines listing up to LISTED wrong verdicts, the question first; none when there are none."""
    if not cases:
        return []
    cut = f" (first {LISTED} of {len(cases)})" if len(cases) > LISTED else ""
    columns = head.count("|") + 2
    rows = [f"| {_cell(c.text, 60)} | {cells(c)} |" for c in cases[:LISTED]]
    return ["", title + cut, "", f"| question | {head} |", "|---" * columns + "|", *rows]


def unknown_table(cases: list[UnknownCase], threshold: float) -> str:
    """Markdown: precision/recall of the unknown signal, overall and on generic questions per threshold, and the
    questions it got wrong."""
    if not cases:
        return ""
    p, r, tp, fp, fn = _pr([c.predicted for c in cases], [c.truth for c in cases])
    real = sum(not c.truth for c in cases)
    lines = [
        f"Unknown-product signal ({sum(c.truth for c in cases)} not-in-catalog questions, "
        f"{real} about real ones; threshold {threshold:.2f})",
        "",
        "| scope | precision | recall | TP | FP | FN |",
        "|---|---|---|---|---|---|",
        f"| all | {p} | {r} | {tp} | {fp} | {fn} |",
    ]
    if real:
        # The failure that refuses a sale: a product the catalog holds called NOT IN CATALOG.
        lines.insert(1, f"False flags on questions about products the catalog holds: {fp}/{real} = {fp / real:.1%}")
    for path in ("code", "name", "generic"):
        sub = [c for c in cases if c.path == path]
        if sub:
            p, r, tp, fp, fn = _pr([c.predicted for c in sub], [c.truth for c in sub])
            lines.append(f"| {path} questions ({len(sub)}) | {p} | {r} | {tp} | {fp} | {fn} |")
    generic = [c for c in cases if c.path == "generic"]
    if generic:
        lines += [
            "",
            "Generic questions only, by similarity threshold (with the category, lexical and name checks)",
            "",
            "| threshold | precision | recall | FP | FN |",
            "|---|---|---|---|---|",
        ]
        for t in THRESHOLDS:
            predicted = [
                not c.names_category and not c.covered and not c.named and c.best_similarity < t for c in generic
            ]
            p, r, _, fp, fn = _pr(predicted, [c.truth for c in generic])
            lines.append(f"| {t:.2f} | {p} | {r} | {fp} | {fn} |")
    flagged = [c for c in cases if c.predicted and not c.truth]
    lines += _listing("Flagged though the catalog holds them", flagged, "reason | judged product",
                      lambda c: f"{_cell(c.reason, 60)} | {_cell(c.judged, 100)}")  # fmt: skip
    missed = [c for c in cases if c.truth and not c.predicted]
    lines += _listing("Not flagged though the catalog lacks them", missed, "path | first hit",
                      lambda c: f"{c.path} | {_cell(c.top)}")  # fmt: skip
    return "\n".join(lines)
