"""Load scenarios: which assistants are asked what, read from a YAML file (see loadtest/scenarios/demo.yaml).

A file holds `defaults` and named `scenarios`, each overriding any default key:

    assistants: [{name, weight, direct}]  # gateway name; weight in a skewed mix; vLLM served name (optional)
    mix: uniform | skewed                 # skewed draws assistants in proportion to `weight`
    prompts: {catalog, questions, follow_ups, seed}  # catalog: demo or a JSONL file (relative to the YAML)
    retrieval: true | false               # the gateway's retrieval, when this tool starts the gateway itself
    max_tokens: 64
    stream: true
    temperature: 0                        # optional
    extra: {min_tokens: 64}               # optional: more request fields (min_tokens = max_tokens: fixed lengths)

Requests come in a fixed order for a seed, so the gateway and vLLM directly get the same sequence.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtest.options import DEFAULT_FILE
from retrieval.catalog import Product

Message = dict[str, str]

_ASK = [
    "How much is the {name}?",
    "Is the {name} in stock?",
    "Tell me about the {name}.",
    "What does product {id} cost?",
    "Do you carry a {category} under {price:.0f} {currency}?",
]
_FOLLOW_UPS = [
    "Is it in stock?",
    "Does it come with a warranty?",
    "Is there a cheaper {category}?",
    "How does it compare with the {other}?",
    "Which one would you recommend for a beginner?",
]


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says where."""


@dataclass(frozen=True)
class AssistantShare:
    """One assistant in the mix: its gateway name, its weight, and its vLLM served name if the file gives one."""

    name: str
    weight: float = 1.0
    direct: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    assistants: list[AssistantShare]
    mix: str = "skewed"
    catalog: str = "demo"
    questions: int = 200
    follow_ups: float = 0.3
    seed: int = 20
    retrieval: bool = True
    max_tokens: int = 64
    stream: bool = True
    temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    base: Path = Path(".")

    def weights(self) -> list[float]:
        """Each assistant's share of requests (uniform ignores the weights)."""
        return [1.0 if self.mix == "uniform" else a.weight for a in self.assistants]


@dataclass(frozen=True)
class RequestSpec:
    """One request to send: to which assistant, what, and how."""

    assistant: str
    messages: list[Message]
    max_tokens: int
    stream: bool
    temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self, model: str) -> dict[str, Any]:
        """The chat completion request addressed to `model` (an assistant name or a vLLM served name)."""
        body: dict[str, Any] = {"model": model, "messages": self.messages, "max_tokens": self.max_tokens}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body | self.extra


def _scenario(name: str, raw: dict[str, Any], base: Path) -> Scenario:
    prompts = raw.pop("prompts", None) or {}
    assistants = raw.pop("assistants", None) or []
    known = {"mix", "retrieval", "max_tokens", "stream", "temperature", "extra", "description"}
    if unknown := set(raw) - known:
        raise ScenarioError(f"scenario {name}: unknown keys {sorted(unknown)}")
    if unknown := set(prompts) - {"catalog", "questions", "follow_ups", "seed"}:
        raise ScenarioError(f"scenario {name}: unknown prompts keys {sorted(unknown)}")
    if not assistants:
        raise ScenarioError(f"scenario {name}: no assistants")
    try:
        shares = [AssistantShare(**a) if isinstance(a, dict) else AssistantShare(str(a)) for a in assistants]
    except TypeError as exc:
        raise ScenarioError(f"scenario {name}: assistants: {exc}") from None
    if raw.get("mix", "skewed") not in {"uniform", "skewed"}:
        raise ScenarioError(f"scenario {name}: mix must be uniform or skewed, not {raw['mix']!r}")
    if not 0 <= float(prompts.get("follow_ups", 0)) < 1:
        raise ScenarioError(f"scenario {name}: prompts.follow_ups is a share, at least 0 and below 1")
    if any(a.weight <= 0 for a in shares):
        raise ScenarioError(f"scenario {name}: weights must be positive")
    return Scenario(name=name, assistants=shares, base=base, **prompts, **raw)


def load_scenarios(path: Path = DEFAULT_FILE) -> dict[str, Scenario]:
    """Every scenario of a file, in file order."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    defaults = data.get("defaults") or {}
    named = data.get("scenarios") or {"default": {}}
    out = {}
    for name, overrides in named.items():
        merged = {**defaults, **(overrides or {})}
        merged["prompts"] = {**(defaults.get("prompts") or {}), **((overrides or {}).get("prompts") or {})}
        out[name] = _scenario(name, merged, path.parent)
    return out


def load_scenario(path: Path = DEFAULT_FILE, name: str | None = None) -> Scenario:
    """One scenario of a file: `name`, or the first."""
    scenarios = load_scenarios(path)
    if name is None:
        return next(iter(scenarios.values()))
    if name not in scenarios:
        raise ScenarioError(f"{path}: no scenario {name!r} (it has {', '.join(scenarios)})")
    return scenarios[name]


def _catalog(scenario: Scenario) -> list[Product]:
    if scenario.catalog == "demo":
        from retrieval.demo_catalog import demo_catalog

        return demo_catalog()
    path = scenario.base / scenario.catalog
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ScenarioError(f"scenario {scenario.name}: catalog: {exc}") from None
    return [Product.model_validate_json(line) for line in lines if line.strip()]


def _questions(scenario: Scenario, catalog: list[Product], rng: random.Random) -> list[str]:
    if scenario.catalog == "demo":
        # The labelled retrieval set: names, SKUs, typos, comparisons and products the shop does not sell.
        from retrieval.queries import labelled_queries

        texts = [q.text for q in labelled_queries(catalog, seed=scenario.seed)]
    else:
        texts = [rng.choice(_ASK).format(**p.model_dump()) for p in catalog]
    rng.shuffle(texts)
    return texts[: scenario.questions]


def _follow_up(catalog: list[Product], rng: random.Random) -> list[Message]:
    product, other = rng.sample(catalog, 2)
    answer = f"The {product.name} costs {product.price} {product.currency}."
    follow = rng.choice(_FOLLOW_UPS).format(category=product.category, other=other.name)
    return [
        {"role": "user", "content": f"How much is the {product.name}?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": follow},
    ]


def conversations(scenario: Scenario) -> list[list[Message]]:
    """The scenario's prompts: single product questions and, for a `follow_ups` share, three-turn follow-ups."""
    rng = random.Random(scenario.seed)
    catalog = _catalog(scenario)
    if len(catalog) < 2:
        raise ScenarioError(f"scenario {scenario.name}: the catalog needs at least two products")
    prompts: list[list[Message]] = [[{"role": "user", "content": q}] for q in _questions(scenario, catalog, rng)]
    follow_ups = round(len(prompts) * scenario.follow_ups / (1 - scenario.follow_ups))
    prompts += [_follow_up(catalog, rng) for _ in range(follow_ups)]
    rng.shuffle(prompts)
    return prompts


def requests(scenario: Scenario, seed: int | None = None) -> Iterator[RequestSpec]:
    """An endless, reproducible sequence of requests: assistants drawn by the mix, prompts in turn."""
    prompts = conversations(scenario)
    rng = random.Random(scenario.seed if seed is None else seed)
    names = [a.name for a in scenario.assistants]
    weights = scenario.weights()
    i = 0
    while True:
        (assistant,) = rng.choices(names, weights)
        yield RequestSpec(
            assistant,
            prompts[i % len(prompts)],
            scenario.max_tokens,
            scenario.stream,
            scenario.temperature,
            dict(scenario.extra),
        )
        i += 1
