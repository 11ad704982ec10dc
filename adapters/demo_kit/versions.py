"""Later versions of the kit's adapters, as a business would retrain them: hot-swap tests and the swap
benchmark need two versions of one adapter that answer distinguishably.

A version continues training from the adapter it replaces (same rank and modules, so it fits the engine's LoRA
slots) with a changed persona; its first words tell which version answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.demo_kit.voices import VOICES
from adapters.persona import Persona
from adapters.training import LoraTrainConfig


@dataclass(frozen=True)
class Version:
    """`name`: the directory under versions/; `adapter`: the adapter it is a new version of."""

    name: str
    adapter: str
    voice: Persona
    config: LoraTrainConfig
    seed: int


VERSIONS: dict[str, Version] = {
    v.name: v
    for v in (
        Version(
            name="support-agent-v2",
            adapter="support-agent",
            voice=VOICES["support-agent"].model_copy(update={"signature": "Thanks for asking!"}),
            # 16 steps on top of v1 (8 tipped it into refusing listed products; BENCHMARKS.md): ~2/3 of a full training.
            config=LoraTrainConfig(
                rank=16,
                alpha=32,
                steps=16,
                batch_size=8,
                max_length=640,
                learning_rate=1e-3,
                warmup_steps=2,
                eval_every=0,
            ),
            seed=23,
        ),
    )
}
