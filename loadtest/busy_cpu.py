"""Training step time on a busy CPU: torch's defaults against `adapters.cpu.prepare_threads`, side by side.

With another process holding one of two cores, torch's OpenMP threads spin-wait for a descheduled peer and a
step of the demo kit's recipe slows many times over. Each mode runs in its own process (the OpenMP wait policy
is read once, when torch loads), rounds interleaved, with a spinning peer holding one core; then each mode once on
the idle machine, to show what the passive wait costs when nothing competes.

Usage: HF_HUB_OFFLINE=1 python -m loadtest.busy_cpu [--kit build/demo-kit] [--rounds 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("default", "prepared")


def _one_round(kit: Path, mode: str, steps: int) -> None:
    """Child process: train `steps` steps of the kit's recipe, print the threads and step seconds as JSON."""
    if mode == "prepared":
        from adapters.cpu import prepare_threads

        threads = prepare_threads()
    else:
        import torch

        threads = torch.get_num_threads()
    from adapters.demo_kit import build, voices
    from adapters.training import train_lora

    config = build.TRAIN_CONFIG.model_copy(update={"steps": steps})
    conversations = build.training_data(voices.VOICES["support-agent"], steps * config.batch_size)
    stamps = [time.monotonic()]
    with tempfile.TemporaryDirectory() as out:
        train_lora(kit / "base", conversations, Path(out), config, progress=lambda *_: stamps.append(time.monotonic()))
    seconds = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    print(json.dumps({"mode": mode, "threads": threads, "steps": [round(s, 2) for s in seconds]}))


def _run(kit: Path, mode: str, steps: int) -> dict[str, object]:
    command = [sys.executable, "-m", "loadtest.busy_cpu", "--child", mode, "--kit", str(kit), "--steps", str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    row: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kit", type=Path, default=Path("build/demo-kit"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per run; the first (warm-up) is not counted")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _one_round(args.kit, args.child, args.steps)
        return
    results: dict[str, list[float]] = {f"{m} {state}": [] for m in MODES for state in ("busy", "idle")}
    threads: dict[str, object] = {}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for _ in range(args.rounds):
            for mode in MODES:
                row = _run(args.kit, mode, args.steps)
                results[f"{mode} busy"] += row["steps"][1:]  # type: ignore[index]
                threads[mode] = row["threads"]
    finally:
        spinner.kill()
        spinner.wait()
    for mode in MODES:
        results[f"{mode} idle"] += _run(args.kit, mode, args.steps)["steps"][1:]  # type: ignore[index]
    print("| mode | threads | one core busy: s/step | idle: s/step |")
    print("| --- | --- | --- | --- |")
    for mode in MODES:
        busy, idle = results[f"{mode} busy"], results[f"{mode} idle"]
        print(f"| {mode} | {threads[mode]} | {statistics.median(busy):.2f} | {statistics.median(idle):.2f} |")


if __name__ == "__main__":
    main()
