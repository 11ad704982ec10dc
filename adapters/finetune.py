"""`lorag train lora`: one recorded LoRA run over a dataset directory, with the trainer of adapters.training.

Writes, beside the PEFT adapter in OUT: losses.csv (step, training loss, and the eval loss on the eval split at
step 0, before training, every `eval_every` steps and at the last step), loss.png when matplotlib is installed,
and run.json (the data card, the settings, the time, the final losses), which `lorag train runs` compares. The demo
kit's adapters are trained here too (adapters.demo_kit.build).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adapters.cpu import prepare_threads
from adapters.dataset import read_card, read_split
from adapters.training import Conversation, LoraTrainConfig, train_lora

RUN = "run.json"
LOSSES = "losses.csv"


def steps_for(examples: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps that show the training split `epochs` times."""
    return max(1, math.ceil(examples * epochs / batch_size))


def _plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows if r["loss"] != ""], [r["loss"] for r in rows if r["loss"] != ""], label="train")
    evals = [r for r in rows if r["eval_loss"] != ""]
    ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o--", label="eval")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def run_lora(
    base: Path,
    data: Path,
    out: Path,
    cfg: LoraTrainConfig,
    *,
    epochs: float | None = None,
    eval_samples: int = 32,
    name: str | None = None,
    init_adapter: Path | None = None,
    share_cpu: bool = True,
) -> dict[str, Any]:
    """Train an adapter on DATA's train split into `out` and record the run; the run record."""
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"base model {base} has no config.json (a Hugging Face model directory)")
    conversations = [s["messages"] for s in read_split(data, "train")]
    held = [s["messages"] for s in read_split(data, "eval") if s["kind"] != "domain"][:eval_samples]
    if epochs is not None:
        cfg = cfg.model_copy(update={"steps": steps_for(len(conversations), cfg.batch_size, epochs)})
    return record_run(base, conversations, out, cfg, held=held, name=name, data=str(data), card=read_card(data),
                      init_adapter=init_adapter, share_cpu=share_cpu)  # fmt: skip


def record_run(
    base: Path,
    conversations: Sequence[Conversation],
    out: Path,
    cfg: LoraTrainConfig,
    *,
    held: Sequence[Conversation] = (),
    name: str | None = None,
    data: str = "",
    card: dict[str, Any] | None = None,
    init_adapter: Path | None = None,
    share_cpu: bool = True,
) -> dict[str, Any]:
    """Train with adapters.training.train_lora under a progress bar and write losses.csv, loss.png and run.json
    beside the adapter; the run record.

    `share_cpu`: threads from the cores free at the start, with a passive OpenMP wait (adapters.cpu), for a
    machine other work shares; False keeps torch's defaults, 19 % faster a step on an idle machine.
    """
    threads = prepare_threads(cfg.threads) if share_cpu else _torch_threads(cfg.threads)
    rows: dict[int, dict[str, Any]] = {0: {"step": 0, "loss": "", "eval_loss": ""}}
    started = time.time()
    with tqdm(total=cfg.steps, desc=f"training {name or out.name}", unit="step", file=sys.stderr) as bar:

        def progress(step: int, total: int, loss: float) -> None:
            rows[step] = {"step": step, "loss": round(loss, 4), "eval_loss": ""}
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)

        def on_eval(step: int, loss: float) -> None:
            rows[step]["eval_loss"] = loss
            if step:
                bar.set_postfix(loss=f"{rows[step]['loss']:.3f}", eval=f"{loss:.3f}")

        report = train_lora(base, conversations, out, cfg, progress=progress, init_adapter=init_adapter,
                            held=held, on_eval=on_eval)  # fmt: skip
    table = [rows[step] for step in sorted(rows)]
    with (out / LOSSES).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "loss", "eval_loss"])
        writer.writeheader()
        writer.writerows(table)
    record = {
        "name": name or out.name,
        "base": str(base),
        "data": data,
        "card": card or {"samples": {"train": len(conversations), "eval": len(held)}},
        "config": cfg.model_dump(),
        "init_adapter": str(init_adapter) if init_adapter else None,
        "threads": threads,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "report": report.to_json(),
        "eval_loss_base": table[0]["eval_loss"] if held else None,
        "eval_loss": table[-1]["eval_loss"] if held else None,
        "eval_samples": len(held),
        "plot": "loss.png" if _plot(table, out / "loss.png") else None,
    }
    (out / RUN).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _torch_threads(requested: int | None) -> int:
    import torch

    if requested:
        torch.set_num_threads(requested)
    return int(torch.get_num_threads())


def load_runs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Run records from adapter directories (or directories holding them, one level down)."""
    found: list[Path] = []
    for path in paths:
        found += [path / RUN] if (path / RUN).is_file() else sorted(path.glob(f"*/{RUN}"))
    return [json.loads(p.read_text()) | {"path": str(p.parent)} for p in found]


def runs_table(runs: list[dict[str, Any]]) -> str:
    """Recorded runs side by side: data, settings, time and losses."""
    head = ["run", "train", "eval", "rank", "alpha", "lr", "steps", "batch", "seconds", "loss first", "loss last"]
    head += ["eval base", "eval loss"]
    lines = [head]
    for r in runs:
        c, rep, samples = r["config"], r["report"], r.get("card", {}).get("samples", {})
        lines.append(
            [r["name"], samples.get("train", "?"), samples.get("eval", "?"), c["rank"], c["alpha"], c["learning_rate"]]
            + [rep["steps"], c["batch_size"], rep["seconds"], rep["first_loss"], rep["last_loss"]]
            + [r.get("eval_loss_base"), r.get("eval_loss")]
        )
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in lines)
