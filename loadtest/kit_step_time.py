"""CPU seconds per training step of the demo kit's recipe for LoRA on the upper N layers, measured side by side.

This machine's speed moves 10-20 % between hours, so two builds at different times cannot compare recipes: this
script trains the same batches with each layer set in turn, several rounds interleaved, and reports the mean time
of a step after the first two (kernel warm-up).

Usage: HF_HUB_OFFLINE=1 python -m loadtest.kit_step_time --kit build/demo-kit [--top 20 18 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from adapters.demo_kit import build, voices
from adapters.training import train_lora


def _stamper(stamps: list[float]) -> Callable[[int, int, float], None]:
    return lambda _step, _total, _loss: stamps.append(time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kit", type=Path, default=Path("build/demo-kit"))
    parser.add_argument("--top", type=int, nargs="+", default=[20, 18, 16], help="LoRA on the upper N of 30 layers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--voice", default="support-agent", choices=list(voices.VOICES))
    args = parser.parse_args()

    cfg = build.TRAIN_CONFIG
    conversations = build.training_data(voices.VOICES[args.voice], args.steps * cfg.batch_size)
    times: dict[int, list[float]] = {top: [] for top in args.top}
    for round_ in range(args.rounds):
        for top in args.top:
            run = cfg.model_copy(update={"steps": args.steps, "layers": list(range(30 - top, 30))})
            stamps: list[float] = []
            with tempfile.TemporaryDirectory() as out:
                train_lora(
                    args.kit / "base",
                    conversations,
                    Path(out),
                    run,
                    progress=_stamper(stamps),
                )
            per_step = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
            times[top].append(per_step)
            print(f"round {round_ + 1} top{top}: {per_step:.3f} s a step", flush=True)
    reference = statistics.mean(times[args.top[0]])
    for top, values in times.items():
        mean = statistics.mean(values)
        print(
            f"top{top}: {mean:.3f} s a step (rounds: {', '.join(f'{v:.3f}' for v in values)}), "
            f"{100 * (mean / reference - 1):+.1f} % against top{args.top[0]}"
        )


if __name__ == "__main__":
    main()
