"""Chat benchmark: vLLM direct against the lorag gateway, interleaved, with `vllm bench serve`'s own code.

Every run is `vllm bench serve --backend openai-chat --endpoint /v1/chat/completions --dataset-name random`
(1024 tokens in, 256 out, 400 prompts, at most 64 in flight, no rate limit), called in this one process so that
vLLM is imported once. Each run gets its own seed (no prefix-cache hits between runs). A case is `base` (the base
model) or N (adapters a1..aN, round-robin); TARGETS says which server each of its runs goes to, in order.

EOS: with the random dataset `vllm bench serve` always sends `ignore_eos`, a vLLM extension that the gateway
may refuse. EOS_MODE=auto (default) asks the gateway once: if it refuses `ignore_eos`, every run (direct ones
too, so both sides get the same requests) sends `min_tokens` = the output length instead, which makes vLLM
generate exactly that many tokens too (EOS and stop tokens are suppressed until min_tokens).

Usage (after env.sh; chat_bench.sh does both): python3 .gpu/chat_bench.py CASE...
env: TARGETS ("direct gateway direct gateway"), DIRECT_URL (http://127.0.0.1:$PORT), GATEWAY_URL
     (http://127.0.0.1:8100), NUM_PROMPTS (400), CONCURRENCY (64), INPUT_LEN (1024), OUTPUT_LEN (256),
     SEED_BASE (0), EOS_MODE (auto | ignore_eos | min_tokens), MODEL_DIR, OUT (results: chat-<cases>.json and
     chat-<cases>.txt; per-run vLLM result files stay in /tmp/chat-bench)
Prints one line per run and, per case, gateway minus direct (means over the runs of each).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

PORT = os.environ.get("PORT", "8000")
URLS = {
    "direct": os.environ.get("DIRECT_URL", f"http://127.0.0.1:{PORT}"),
    "gateway": os.environ.get("GATEWAY_URL", f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8100')}"),
}
TARGETS = os.environ.get("TARGETS", "direct gateway direct gateway").split()
NUM_PROMPTS = int(os.environ.get("NUM_PROMPTS", "400"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "64"))
INPUT_LEN = int(os.environ.get("INPUT_LEN", "1024"))
OUTPUT_LEN = int(os.environ.get("OUTPUT_LEN", "256"))
SEED_BASE = int(os.environ.get("SEED_BASE", "0"))
MODEL_DIR = os.environ.get("MODEL_DIR", "/tmp/qwen3-8b-dummy")
RUN_DIR = Path(os.environ.get("CHAT_BENCH_DIR", "/tmp/chat-bench"))
OUT = Path(os.environ.get("OUT") or "/tmp/bench")
# Which processes' CPU time to read per run: the session each pid file's process leads (setsid).
PIDFILES = {"gateway": "/tmp/gateway.pid", "vllm": "/tmp/vllm.pid"}
METRICS = [  # (result key, label, format)
    ("request_throughput", "req/s", "{:.2f}"),
    ("output_throughput", "out tok/s", "{:.0f}"),
    ("p50_ttft_ms", "TTFT p50 ms", "{:.0f}"),
    ("p99_ttft_ms", "TTFT p99 ms", "{:.0f}"),
    ("p50_tpot_ms", "TPOT p50 ms", "{:.2f}"),
    ("p99_tpot_ms", "TPOT p99 ms", "{:.2f}"),
    ("p50_itl_ms", "ITL p50 ms", "{:.2f}"),
    ("p50_e2el_ms", "E2EL p50 ms", "{:.0f}"),
    ("p99_e2el_ms", "E2EL p99 ms", "{:.0f}"),
]


def session_cpu_seconds(pidfile: str) -> float | None:
    """User + system CPU seconds of every live process in the session led by the pid in `pidfile`."""
    try:
        sid = int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid pgrp session ... utime(12th) stime(13th), 0-based 11 and 12
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def gateway_takes(field: str, value: object) -> tuple[bool, str]:
    body = {
        "model": "qwen3-8b",
        "messages": [{"role": "user", "content": "t1 t2 t3"}],
        "max_completion_tokens": 2,
        field: value,
    }
    req = urllib.request.Request(
        URLS["gateway"] + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status == 200, ""
    except urllib.error.HTTPError as e:
        return False, f"{e.code} {e.read().decode()[:200]}"


def eos_mode() -> str:
    mode = os.environ.get("EOS_MODE", "auto")
    if mode != "auto":
        return mode
    if "gateway" not in TARGETS:
        return "ignore_eos"
    ok, why = gateway_takes("ignore_eos", True)
    if ok:
        return "ignore_eos"
    print(f"the gateway refuses ignore_eos ({why}); every run sends min_tokens={OUTPUT_LEN} instead", flush=True)
    return "min_tokens"


def patch_min_tokens() -> None:
    """Send min_tokens = the requested output length in place of ignore_eos (the random dataset forces the latter)."""
    import vllm.benchmarks.lib.endpoint_request_func as erf

    original = erf._update_payload_common

    def update(payload: dict, request_func_input: object) -> None:  # type: ignore[type-arg]
        original(payload, request_func_input)
        if payload.pop("ignore_eos", None):
            payload["min_tokens"] = payload.get("max_completion_tokens") or payload.get("max_tokens")

    erf._update_payload_common = update


def bench_args(case: str, target: str, seed: int, filename: str) -> list[str]:
    args = [
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions", "--base-url", URLS[target],
        "--model", "qwen3-8b", "--tokenizer", MODEL_DIR, "--dataset-name", "random",
        "--random-input-len", str(INPUT_LEN), "--random-output-len", str(OUTPUT_LEN),
        "--num-prompts", str(NUM_PROMPTS), "--max-concurrency", str(CONCURRENCY), "--ignore-eos",
        "--disable-tqdm", "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--seed", str(seed), "--label", f"{case}-{target}",
        "--save-result", "--result-dir", str(RUN_DIR), "--result-filename", filename,
    ]  # fmt: skip
    if case != "base":
        args += ["--lora-assignment", "round-robin", "--lora-modules", *[f"a{i}" for i in range(1, int(case) + 1)]]
    return args


def line(r: dict) -> str:  # type: ignore[type-arg]
    return (
        f"{r['completed']}/{r['num_prompts']} ok in {r['duration']:.1f} s, {r['request_throughput']:.2f} req/s, "
        f"{r['output_throughput']:.0f} out tok/s, TTFT p50/p99 {r['p50_ttft_ms']:.0f}/{r['p99_ttft_ms']:.0f} ms, "
        f"TPOT p50/p99 {r['p50_tpot_ms']:.2f}/{r['p99_tpot_ms']:.2f} ms, E2EL p50 {r['p50_e2el_ms']:.0f} ms"
    )


def main(cases: list[str]) -> int:
    if not cases or any(c != "base" and not c.isdigit() for c in cases):
        print(__doc__)
        return 2
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    mode = eos_mode()
    t0 = time.perf_counter()
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    print(f"vllm imported in {time.perf_counter() - t0:.1f} s; EOS mode {mode}", flush=True)
    if mode == "min_tokens":
        patch_min_tokens()
    runs = []
    for case in cases:
        case_num = 0 if case == "base" else int(case)
        for i, target in enumerate(TARGETS):
            seed = SEED_BASE + 5000 + 10 * case_num + i  # bench.sh uses 1, 7 and 100+N
            filename = f"chat-{case}-{i}-{target}.json"
            parser = FlexibleArgumentParser()
            add_cli_args(parser)
            args = parser.parse_args(bench_args(case, target, seed, filename))
            cpu_before = {k: session_cpu_seconds(p) for k, p in PIDFILES.items()}
            started = time.perf_counter()
            record = {"case": case, "run": i, "target": target, "seed": seed, "eos_mode": mode}
            log = RUN_DIR / filename.replace(".json", ".log")
            try:
                # vllm bench serve prints its arguments and a results table per run: keep them in a log.
                with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                    bench_main(args)
                result = json.loads((RUN_DIR / filename).read_text())
                for key in ("input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors", "start_times"):
                    result.pop(key, None)  # per-request lists, only with --save-detailed
                record["result"] = result
            except Exception:
                record["error"] = traceback.format_exc()[-2000:]
            record["wall_s"] = round(time.perf_counter() - started, 1)
            cpu_after = {k: session_cpu_seconds(p) for k, p in PIDFILES.items()}
            record["cpu_s"] = {
                k: round(cpu_after[k] - cpu_before[k], 1)
                for k in PIDFILES
                if cpu_before[k] is not None and cpu_after[k] is not None
            }
            runs.append(record)
            save(cases, mode, runs)  # after every run: a call cut short by its time limit still returns these
            cpu = ", ".join(f"{k} CPU {v:.1f} s" for k, v in record["cpu_s"].items())
            if "result" in record:
                print(
                    f"{case:>5} {target:>7} #{i}: {line(record['result'])}; {cpu}; wall {record['wall_s']} s",
                    flush=True,
                )
            else:
                print(f"{case:>5} {target:>7} #{i}: FAILED after {record['wall_s']} s\n{record['error']}", flush=True)
            if "result" not in record or record["result"]["completed"] != record["result"]["num_prompts"]:
                print(
                    f"--- tail of {log}:\n" + "".join(log.read_text(errors="replace").splitlines(True)[-40:]),
                    flush=True,
                )
    print(save(cases, mode, runs))
    return 0 if all("result" in r and r["result"]["completed"] == r["result"]["num_prompts"] for r in runs) else 1


def save(cases: list[str], mode: str, runs: list[dict]) -> str:  # type: ignore[type-arg]
    """Write $OUT/chat-<cases>.json (every run's vLLM result) and .txt (the comparison); return the latter."""
    tag = "-".join(cases)
    summary = compare(runs)
    (OUT / f"chat-{tag}.json").write_text(json.dumps({"eos_mode": mode, "targets": TARGETS, "runs": runs}, indent=1))
    (OUT / f"chat-{tag}.txt").write_text(summary + "\n")
    return summary


def compare(runs: list[dict]) -> str:  # type: ignore[type-arg]
    out = []
    for case in dict.fromkeys(r["case"] for r in runs):
        means = {}
        for target in ("direct", "gateway"):
            ok = [  # runs that failed altogether are left out; partial failures show in `completed`
                r["result"]
                for r in runs
                if r["case"] == case and r["target"] == target and "result" in r and r["result"]["completed"]
            ]
            if ok:
                means[target] = {k: statistics.fmean(x[k] for x in ok if x.get(k) is not None) for k, _, _ in METRICS}
                means[target]["n"] = len(ok)
        if len(means) < 2:
            out.append(f"{case}: not both targets measured")
            continue
        d, g = means["direct"], means["gateway"]
        out.append(f"case {case}: direct ({d['n']} runs) vs gateway ({g['n']} runs), means")
        for key, label, fmt in METRICS:
            delta = g[key] - d[key]
            pct = f"{100 * delta / d[key]:+.1f} %" if d[key] else ""
            out.append(f"  {label:>12}: {fmt.format(d[key]):>8} -> {fmt.format(g[key]):>8}  ({delta:+.2f}, {pct})")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
