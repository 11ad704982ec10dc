"""`lorag engine`: vLLM serving the demo kit (or any model and adapters) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from lorag.launcher import AdapterSpec, Engine, EngineSpec, kit_spec

DEFAULT_KIT = Path("build/demo-kit")


def kit_engine_spec(kit_dir: Path, port: int, plumbing: bool = False, host: str = "127.0.0.1") -> EngineSpec:
    """An EngineSpec serving the kit in `kit_dir` (its base model, or its plumbing model) with its adapters."""
    from adapters.demo_kit.kit import load_kit

    return kit_spec(load_kit(kit_dir, plumbing=plumbing), port, host)


def _spec(args: argparse.Namespace) -> EngineSpec | None:
    if not args.model:
        return kit_engine_spec(args.kit, args.port, plumbing=args.plumbing, host=args.host)
    adapters = []
    for item in args.adapter or []:
        name, sep, path = item.partition("=")
        if not sep:
            print(f"--adapter expects NAME=PATH, got {item!r}", file=sys.stderr)
            return None
        adapters.append(AdapterSpec(name, Path(path)))
    return EngineSpec(
        model=args.model,
        served_name=args.served_model_name or args.model,
        adapters=adapters,
        port=args.port,
        host=args.host,
    )


def _engine(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if spec is None:
        return 2
    spec.max_model_len = args.max_model_len
    spec.extra_args = args.extra or []
    engine = Engine(spec)
    print(
        f"starting vLLM for {spec.served_name} with adapters {[a.name for a in spec.adapters]} "
        f"(log: {engine.log_path})",
        file=sys.stderr,
    )
    engine.start(timeout=args.timeout)
    print(f"engine ready in {engine.ready_seconds:.0f} s: {engine.url}/v1", flush=True)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        # Wake twice a second to notice an engine that died on its own.
        while not stopping.wait(0.5):
            if engine.process is None or engine.process.poll() is not None:
                print(f"engine exited:\n{engine.log_tail()}", file=sys.stderr)
                return 1
    finally:
        print("stopping engine", file=sys.stderr)
        engine.stop()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `engine` to the lorag command line."""
    eng = sub.add_parser("engine", help="start vLLM with LoRA adapters (the demo kit by default)")
    eng.add_argument("--kit", type=Path, default=DEFAULT_KIT)
    eng.add_argument("--plumbing", action="store_true", help="serve the kit's tiny Qwen3 plumbing model")
    eng.add_argument("--model", help="a model path or hub id instead of the kit")
    eng.add_argument("--served-model-name")
    eng.add_argument("--adapter", action="append", metavar="NAME=PATH", help="with --model (repeatable)")
    eng.add_argument("--host", default="127.0.0.1")
    eng.add_argument("--port", type=int, default=8001)
    eng.add_argument("--max-model-len", type=int, default=2048)
    eng.add_argument("--timeout", type=float, default=600, help="seconds to wait for /health")
    eng.add_argument("extra", nargs="*", help="after --, extra arguments passed to vLLM")
    eng.set_defaults(func=_engine)
