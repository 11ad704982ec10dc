"""What a fine-tuning dataset is made of: the sample kinds, their proportions, and the shape of the samples.

The default mix follows a production report's final dataset (~26k samples: ~18k product Q&A, ~1.1k
recommendations, ~6k multi-turn, ~800 domain knowledge, ~275 safety split over five kinds). Its lesson is that the
few edge-case samples matter most (275 safety samples cut its eval loss by 26 %), so a small dataset keeps at
least `floor` samples of every kind it asks for rather than rounding the safety kinds away.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SAFETY_KINDS = ("fake_product", "price_manipulation", "off_topic", "prompt_injection", "negotiation")
KINDS = ("product_qa", "recommendation", "multi_turn", "domain", *SAFETY_KINDS)

# The report's final counts; the five safety kinds share its 275 safety samples equally.
REPORT_COUNTS: dict[str, float] = {
    "product_qa": 18_000,
    "recommendation": 1_100,
    "multi_turn": 6_000,
    "domain": 800,
    **{kind: 275 / len(SAFETY_KINDS) for kind in SAFETY_KINDS},
}


class Mix(BaseModel):
    """Relative weight of each kind (any scale: they are normalised) and the minimum count of a kind in use."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(default_factory=lambda: dict(REPORT_COUNTS))
    floor: int = Field(default=2, ge=0, description="Fewest samples of a kind whose weight is above 0.")

    @field_validator("weights")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown sample kind {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
        if any(w < 0 for w in value.values()) or not any(w > 0 for w in value.values()):
            raise ValueError("weights must be >= 0 and at least one above 0")
        return value

    def counts(self, total: int) -> dict[str, int]:
        """Samples per kind for a dataset of about `total` samples (largest remainders, then the floor)."""
        norm = sum(self.weights.values())
        exact = {k: total * self.weights.get(k, 0) / norm for k in KINDS}
        counts = {k: int(v) for k, v in exact.items()}
        for k in sorted(KINDS, key=lambda k: counts[k] - exact[k])[: total - sum(counts.values())]:
            counts[k] += 1
        return {k: max(n, self.floor) if self.weights.get(k, 0) > 0 else 0 for k, n in counts.items()}


def parse_mix(text: str) -> Mix:
    """A Mix from 'product_qa=0.7,fake_product=0.1,...' (kinds left out keep the default weight, scaled)."""
    weights = dict(REPORT_COUNTS)
    norm = sum(weights.values())
    weights = {k: v / norm for k, v in weights.items()}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"mix entry {part!r} is not kind=weight")
        try:
            weights[kind.strip()] = float(value)
        except ValueError:
            raise ValueError(f"mix weight {value!r} for {kind!r} is not a number") from None
    return Mix(weights=weights)


class Shape(BaseModel):
    """How often each shape of facts block and follow-up occurs; the defaults are a retriever's usual output.

    An assistant whose use differs says so here: the demo kit, for one, asks several questions per facts block
    and shows half its products among unrelated ones (adapters.demo_kit.build).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    look_alikes: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of facts blocks holding the asked product's look-alikes; the rest hold unrelated "
        "products (a broad question's hits).",
    )
    by_sku: float = Field(default=0.1, ge=0, le=1, description="Share of questions naming the product by SKU.")
    brandless: float = Field(
        default=0.0, ge=0, le=1, description="Share naming it without its first word (the brand, most often)."
    )
    follow_ups: int = Field(default=3, ge=1, description="Most follow-up questions in a multi-turn sample.")
    follow_up_stock: float = Field(default=0.35, ge=0, le=1, description="Share of follow-ups about stock alone.")
    follow_up_fakes: float = Field(
        default=0.25, ge=0, le=1, description="Share of follow-ups about a product the shop does not sell."
    )
    open_fakes: float = Field(
        default=0.0, ge=0, le=1, description="Share of multi-turn samples opening on a product the shop does not sell."
    )
    fake_signal: float = Field(
        default=0.5, ge=0, le=1, description="Share of fake-product questions the retriever flags NOT IN CATALOG."
    )
    fake_unrelated: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of unflagged fakes whose facts block shows nothing like the asked name.",
    )

    @model_validator(mode="after")
    def _shares_fit(self) -> Shape:
        if self.by_sku + self.brandless > 1 or self.follow_up_stock + self.follow_up_fakes > 1:
            raise ValueError("by_sku + brandless and follow_up_stock + follow_up_fakes must each be <= 1")
        return self
