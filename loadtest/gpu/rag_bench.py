"""The product path on a GPU host: vLLM alone, lorag with retrieval off and lorag with retrieval on, same prompts.

Every path ends with vLLM receiving the same prompt. `prepare` ingests a catalog into a local Qdrant, runs
lorag's own retriever and prompt code (server/prompt.py, retrieval/facts.py: exactly what the gateway does) over
the scenario's conversations, and stores each conversation both as the client sends it and as vLLM gets it. Then:

    direct   the rendered messages (persona, rules and facts already in the system message) -> vLLM
    off      the rendered messages -> the gateway, assistant `aN-off` (retrieval off, no persona: passed through)
    rag      the client's messages -> the gateway, assistant `aN` (persona, retrieval top_k, facts injected)

Subcommands (run on the GPU host from the repo root, PYTHONPATH=/tmp/site:<repo>; any GPU host with
`pip install -e '.[gpu]'` works the same):

    prepare   --work DIR [--tokenizer MODEL_DIR]: catalog.jsonl, qdrant/, prompts.json, token counts
    manifest  --adapters N --out FILE: the gateway's assistants (aN rag, aN-off, qwen3-8b)
    compare   --gateway URL --direct URL: the three paths, closed loop, adapters round-robin, alternating blocks
    layouts   --direct URL: prompt layouts against vLLM's prefix cache (default, facts sorted by id, facts first,
              no facts), one adapter set round-robin
    adapters  --direct URL --adapters 16: the base model, N adapters round-robin and a Zipf mix, same prompts
    report    RESULT.json... --out DIR: markdown tables and the plot (CPU machine)

Prefix cache: before every measured block the script asks vLLM to drop its prefix cache (`POST
/reset_prefix_cache`, which needs VLLM_SERVER_DEV_MODE=1 on the engine), so no block gains from the prompts the
previous one sent; the hit rate of each block is read from vLLM's `vllm:prefix_cache_{queries,hits}` counters.
The gateway's CPU per request is its process's user+system time over a block (its pid from --gateway-pid);
retrieval's own time per request is the gateway's `server-timing: retrieval;dur=` header.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loadtest import driver
from loadtest.driver import Load, Target
from loadtest.metrics import SLO, summarize
from loadtest.record import RequestRecord
from loadtest.scenario import RequestSpec, conversations, load_scenario

HERE = Path(__file__).resolve().parent
SCENARIOS = Path(driver.__file__).resolve().parent / "scenarios" / "h200-rag.yaml"  # also when run from .gpu/
# A shop persona of realistic length (56 words): stable text that every request of an assistant starts with.
PERSONA = (
    "You are the shop assistant of Brewline, an online store for coffee equipment: espresso machines, grinders, "
    "kettles, scales and accessories. Answer in two or three short sentences, in a friendly and precise tone. "
    "Name the product you mean with its full name. If the customer asks for advice, recommend at most two "
    "products from the facts."
)
LAYOUTS = ("default", "sorted", "facts_first", "no_facts")


# ---------------------------------------------------------------- prepare


def _render(messages: list[dict[str, Any]], layout: str, products: list[Any], unknown: bool) -> list[dict[str, Any]]:
    """The messages vLLM gets under a layout; `default` is the gateway's own (server/prompt.py)."""
    from retrieval.facts import GROUNDING_RULES, render_facts
    from server.prompt import upstream_messages
    from server.protocol import ChatMessage

    chat = [ChatMessage.model_validate(m) for m in messages]
    if layout == "default":
        return upstream_messages(chat, persona=PERSONA, facts=render_facts(products, unknown=unknown))
    if layout == "sorted":  # repeated products share a prefix whatever their rank
        ordered = sorted(products, key=lambda p: p.id)
        return upstream_messages(chat, persona=PERSONA, facts=render_facts(ordered, unknown=unknown))
    if layout == "facts_first":  # the changing part first: nothing after the template's first tokens is shared
        system = f"{render_facts(products, unknown=unknown)}\n{PERSONA}\n{GROUNDING_RULES}"
        return [{"role": "system", "content": system}, *messages]
    if layout == "no_facts":  # the same persona and question without retrieval
        return upstream_messages(chat, persona=PERSONA, facts=None)
    raise ValueError(layout)


def _template(messages: list[dict[str, Any]]) -> str:
    """Qwen's chat template (make_dummy_model.py's), for counting prompt tokens."""
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n"


def prepare(args: argparse.Namespace) -> int:
    from retrieval.demo_catalog import write_demo_catalog
    from retrieval.embedder import Embedder
    from retrieval.retriever import Retriever
    from retrieval.settings import RetrievalSettings
    from retrieval.store import open_store
    from server.assistants import RetrievalConfig
    from server.prompt import retrieval_query, shown_hits
    from server.protocol import ChatMessage

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    catalog = write_demo_catalog(work / "catalog.jsonl")
    env = {**os.environ, "LORAG_QDRANT_PATH": str(work / "qdrant")}
    subprocess.run(
        [sys.executable, "-m", "lorag", "catalog", "ingest", str(catalog), "--qdrant-path", str(work / "qdrant"),
         "--quiet"],
        check=True, env=env, stdout=sys.stderr,
    )
    ingest_s = time.perf_counter() - t0
    scenario = load_scenario(SCENARIOS, "rag-4-adapters")
    convs = conversations(scenario)
    settings = RetrievalSettings(qdrant_path=work / "qdrant")
    store, close = open_store(settings)
    config = RetrievalConfig(top_k=args.top_k)
    entries, seconds = [], []
    try:
        retriever = Retriever.from_settings(settings, store, Embedder.from_settings(settings))
        for messages in convs:
            chat = [ChatMessage.model_validate(m) for m in messages]
            query = retrieval_query(chat, config.context_turns)
            began = time.perf_counter()
            result = retriever.retrieve(query, top_k=config.top_k, filters=config.filters)
            seconds.append(time.perf_counter() - began)
            hits, unknown = shown_hits(result, config)
            products = [h.product for h in hits]
            entries.append(
                {
                    "messages": messages,
                    "products": [p.id for p in products],
                    "unknown": unknown,
                    "rendered": {layout: _render(messages, layout, products, unknown) for layout in LAYOUTS},
                }
            )
    finally:
        close()
    tokens: dict[str, Any] = {}
    if args.tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(Path(args.tokenizer) / "tokenizer.json"))
        for layout in LAYOUTS:
            counts = [len(tok.encode(_template(e["rendered"][layout]), add_special_tokens=False).ids) for e in entries]
            tokens[layout] = _stats(counts)
        system = [len(tok.encode(e["rendered"]["default"][0]["content"]).ids) for e in entries]
        facts = [
            len(tok.encode(e["rendered"]["default"][0]["content"]).ids)
            - len(tok.encode(e["rendered"]["no_facts"][0]["content"]).ids)
            for e in entries
        ]
        persona = len(tok.encode(PERSONA).ids)
        question = [len(tok.encode(e["messages"][-1]["content"]).ids) for e in entries]
        tokens["parts"] = {"persona": persona, "system_message": _stats(system), "facts_block": _stats(facts),
                           "last_question": _stats(question)}
    doc = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "catalog": "demo",
        "products": sum(1 for _ in catalog.open()),
        "conversations": len(entries),
        "multi_turn": sum(len(e["messages"]) > 1 for e in entries),
        "unknown": sum(e["unknown"] for e in entries),
        "top_k": args.top_k,
        "ingest_s": round(ingest_s, 1),
        "retrieve_in_process_ms": _stats([s * 1000 for s in seconds]),
        "tokens": tokens,
        "entries": entries,
    }
    (work / "prompts.json").write_text(json.dumps(doc) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "entries"}))
    return 0


def _stats(values: list[float]) -> dict[str, float]:
    from retrieval.scores import percentile

    if not values:
        return {}
    return {"mean": round(statistics.fmean(values), 2), "p50": round(percentile(values, 50), 2),
            "p99": round(percentile(values, 99), 2), "min": min(values), "max": max(values)}


def manifest(args: argparse.Namespace) -> int:
    lines = [
        "# lorag on the GPU host (loadtest/gpu/rag_bench.py): aN retrieves (persona, top_k facts), aN-off passes the",
        "# client's messages through (retrieval off, no persona), qwen3-8b is the base model. No sampling defaults.",
        "base_model: qwen3-8b",
        "assistants:",
        "  - {name: qwen3-8b, adapter: null, retrieval: {enabled: false}, max_tokens: 4096}",
    ]
    persona = json.dumps(PERSONA)
    for i in range(1, args.adapters + 1):
        lines.append(f"  - {{name: a{i}, adapter: a{i}, persona: {persona}, retrieval: {{enabled: true, top_k: "
                     f"{args.top_k}}}, max_tokens: 4096}}")
        lines.append(f"  - {{name: a{i}-off, adapter: a{i}, retrieval: {{enabled: false}}, max_tokens: 4096}}")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"manifest {args.out}: qwen3-8b, a1..a{args.adapters} (retrieval on), a1-off..a{args.adapters}-off")
    return 0


# ---------------------------------------------------------------- load


async def _send(client: httpx.AsyncClient, target: Target, spec: RequestSpec, clock: Any) -> RequestRecord:
    """driver.send, keeping the gateway's retrieval time from its server-timing header."""
    from loadtest.record import CONNECT, CONNECTION_LOST, HTTP, TIMEOUT, StreamRecorder

    body = json.dumps(spec.body(target.model(spec.assistant))).encode()
    record = RequestRecord(spec.assistant, target.name, spec.stream, clock())
    try:
        async with client.stream("POST", target.url.rstrip("/") + driver.CHAT, content=body,
                                 headers={"content-type": "application/json"}) as response:
            timing = response.headers.get("server-timing", "")
            if m := re.search(r"retrieval;dur=([0-9.]+)", timing):
                record.retrieval_ms = float(m.group(1))  # type: ignore[attr-defined]
            if response.status_code != 200:
                record.fail(HTTP.format(status=response.status_code), (await response.aread()).decode(errors="replace"))
                return record
            recorder = StreamRecorder(record, clock)
            async for piece in response.aiter_bytes():
                recorder.feed(piece)
            return recorder.finish()
    except httpx.TimeoutException as exc:
        record.fail(TIMEOUT, repr(exc))
    except httpx.ConnectError as exc:
        record.fail(CONNECT, repr(exc))
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        record.fail(CONNECTION_LOST, repr(exc))
    except httpx.HTTPError as exc:
        record.fail(f"http_error:{type(exc).__name__}", repr(exc))
    return record


driver.send = _send  # block() looks send up at call time


def _cpu(pid: int | None) -> float | None:
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _prefix_counters(client: httpx.AsyncClient, engine: str) -> tuple[float, float] | None:
    """vLLM's prefix-cache (queries, hits) token counters, or None where /metrics lacks them."""
    try:
        text = (await client.get(engine.rstrip("/") + "/metrics", timeout=10)).text
    except httpx.HTTPError:
        return None
    sums = {"queries": 0.0, "hits": 0.0}
    found = False
    for line in text.splitlines():
        m = re.match(r"vllm:prefix_cache_(queries|hits)(?:_total)?(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            sums[m.group(1)] += float(m.group(2))
            found = True
    return (sums["queries"], sums["hits"]) if found else None


async def _reset_prefix(client: httpx.AsyncClient, engine: str) -> bool:
    try:
        r = await client.post(engine.rstrip("/") + "/reset_prefix_cache", timeout=30)
        return r.status_code == 200
    except httpx.HTTPError:
        return False


class Stream:
    """A reproducible request sequence for one target: prompt i with adapter draw i, as the target sends it."""

    def __init__(self, entries: list[dict[str, Any]], kind: str, adapters: list[str], mix: str, max_tokens: int,
                 offset: int = 0, seed: int = 20, zipf_s: float = 1.0) -> None:
        self.entries, self.kind, self.adapters, self.mix = entries, kind, adapters, mix
        self.max_tokens, self.i = max_tokens, offset
        self.rng = random.Random(seed + offset)
        self.weights = [1 / (k + 1) ** zipf_s for k in range(len(adapters))]

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> RequestSpec:
        entry = self.entries[self.i % len(self.entries)]
        if self.mix == "zipf":
            (adapter,) = self.rng.choices(self.adapters, self.weights)
        else:  # round-robin
            adapter = self.adapters[self.i % len(self.adapters)]
        self.i += 1
        messages = entry["messages"] if self.kind == "raw" else entry["rendered"][self.kind]
        return RequestSpec(adapter, messages, self.max_tokens, True, None, {"ignore_eos": True})


async def _level(
    paths: list[tuple[Target, str]], entries: list[dict[str, Any]], adapters: list[str], mix: str, level: int,
    seconds: float, rounds: int, engine: str, gateway_pid: int | None, max_tokens: int, slo: SLO,
    offset: int = 0,
) -> dict[str, Any]:
    """One load level: a warm-up per path, then `rounds` alternating blocks per path of seconds/rounds each."""
    load = Load("closed", level)
    streams = {t.name: Stream(entries, kind, adapters, mix, max_tokens, offset=offset) for t, kind in paths}
    out: dict[str, Any] = {t.name: {"records": [], "busy": 0.0, "cpu": 0.0, "queries": 0.0, "hits": 0.0,
                                    "resets": 0, "blocks": 0} for t, _ in paths}
    async with httpx.AsyncClient(timeout=30) as probe:
        clients = {t.name: driver.client_for(t, load, 300.0) for t, _ in paths}
        try:
            for t, kind in paths:  # warm-up: other prompts (offset by half the set), not counted
                warm = Stream(entries, kind, adapters, mix, max_tokens, offset=offset + len(entries) // 2)
                await driver.block(clients[t.name], t, warm, load, level, None)
            for i in range(rounds):
                order = paths if i % 2 == 0 else paths[::-1]
                for t, _ in order:
                    o = out[t.name]
                    o["resets"] += await _reset_prefix(probe, engine)
                    before = await _prefix_counters(probe, engine)
                    cpu0 = _cpu(gateway_pid) if t.url != engine else None
                    records, busy = await driver.block(clients[t.name], t, streams[t.name], load, None,
                                                       seconds / rounds, seed=i)
                    cpu1 = _cpu(gateway_pid) if t.url != engine else None
                    after = await _prefix_counters(probe, engine)
                    o["records"] += records
                    o["busy"] += busy
                    o["blocks"] += 1
                    if cpu0 is not None and cpu1 is not None:
                        o["cpu"] += cpu1 - cpu0
                    if before and after:
                        o["queries"] += after[0] - before[0]
                        o["hits"] += after[1] - before[1]
        finally:
            await asyncio.gather(*(c.aclose() for c in clients.values()))
    result: dict[str, Any] = {"concurrency": level, "mix": mix, "adapters": len(adapters), "targets": {}}
    for name, o in out.items():
        records: list[RequestRecord] = o["records"]
        summary = asdict(summarize(records, o["busy"], slo))
        done = [r for r in records if r.ok]
        prompt = [r.prompt_tokens for r in done if r.prompt_tokens is not None]
        retrieval = [ms for r in records if (ms := getattr(r, "retrieval_ms", None)) is not None]
        summary |= {
            "blocks": o["blocks"],
            "prompt_tokens": _stats(prompt) if prompt else None,
            "retrieval_ms": _stats(retrieval) if retrieval else None,
            "gateway_cpu_ms_per_request": (o["cpu"] / len(records) * 1000) if o["cpu"] and records else None,
            "prefix_cache": {"queries": o["queries"], "hits": o["hits"],
                             "hit_rate": o["hits"] / o["queries"] if o["queries"] else None,
                             "resets_ok": o["resets"]},
        }
        result["targets"][name] = summary
        print(_line(level, mix, name, summary), flush=True)
    return result


def _line(level: int, mix: str, name: str, s: dict[str, Any]) -> str:
    def f(d: dict[str, Any] | None, k: str, digits: int = 0) -> str:
        v = (d or {}).get(k)
        return "-" if v is None else f"{v:.{digits}f}"

    pc = s["prefix_cache"]["hit_rate"]
    return (
        f"c={level:<3} {mix:<5} {name:<16} {s['completed']:>4} ok {s['failed']} failed  {s['output_throughput']:7.0f} "
        f"tok/s  goodput {s['goodput']:5.2f} req/s  TTFT p50/p99 {f(s['ttft_ms'], 'p50')}/{f(s['ttft_ms'], 'p99')} ms"
        f"  TPOT p50/p99 {f(s['tpot_ms'], 'p50', 1)}/{f(s['tpot_ms'], 'p99', 1)} ms  prompt "
        f"{f(s['prompt_tokens'], 'mean')} tok  retrieval p50/p99 {f(s['retrieval_ms'], 'p50', 1)}/"
        f"{f(s['retrieval_ms'], 'p99', 1)} ms  gw CPU {f(s, 'gateway_cpu_ms_per_request', 1)} ms/req  "
        f"prefix hits {'-' if pc is None else f'{pc:.1%}'}"
    )


def _entries(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["entries"]


def _pid(path: Path | None) -> int | None:
    try:
        return int(path.read_text().strip()) if path else None
    except (OSError, ValueError):
        return None


def _run_info(args: argparse.Namespace) -> dict[str, Any]:
    gpu = ""
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.used,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "host": platform.node(), "cpus": os.cpu_count(),
            "gpu": gpu, "command": " ".join(sys.argv),
            "args": {k: str(v) for k, v in vars(args).items() if k != "func"}}


def _save(args: argparse.Namespace, kind: str, levels: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """The results so far (written after every level, so a run cut short keeps what it measured)."""
    doc = {"run": _run_info(args) | extra, "kind": kind, "levels": levels}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def _compare(args: argparse.Namespace) -> dict[str, Any]:
    entries = _entries(args.prompts)
    adapters = [f"a{i}" for i in range(1, args.adapters + 1)]
    direct = Target("direct", args.direct, {a: a for a in adapters})
    paths = [(direct, "default")]
    if args.gateway:
        paths.append((Target("lorag-off", args.gateway, {a: f"{a}-off" for a in adapters}), "default"))
        paths.append((Target("lorag-rag", args.gateway, {a: a for a in adapters}), "raw"))
    levels = []
    for level in args.levels:
        levels.append(await _level(paths, entries, adapters, "rr", level, args.duration, args.rounds, args.direct,
                                   _pid(args.gateway_pid), args.max_tokens, SLO(args.slo_ttft_ms, args.slo_tpot_ms)))
        _save(args, "compare", levels)
    return _save(args, "compare", levels)


async def _layouts(args: argparse.Namespace) -> dict[str, Any]:
    entries = _entries(args.prompts)
    adapters = [f"a{i}" for i in range(1, args.adapters + 1)]
    levels = []
    for level in args.levels:
        for layout in args.layouts.split(","):
            target = Target(layout, args.direct, {a: a for a in adapters})
            levels.append(await _level([(target, layout)], entries, adapters, "rr", level, args.duration, 1,
                                       args.direct, None, args.max_tokens, SLO(args.slo_ttft_ms, args.slo_tpot_ms)))
            _save(args, "layouts", levels)
    return _save(args, "layouts", levels)


async def _adapters(args: argparse.Namespace) -> dict[str, Any]:
    entries = _entries(args.prompts)
    adapters = [f"a{i}" for i in range(1, args.adapters + 1)]
    slo = SLO(args.slo_ttft_ms, args.slo_tpot_ms)
    levels = []
    for level in args.levels:
        for mix in args.mixes.split(","):
            names = ["qwen3-8b"] if mix == "base" else adapters
            target = Target(f"{mix}-{len(names)}", args.direct, {a: a for a in names})
            levels.append(await _level([(target, "default")], entries, names, "zipf" if mix == "zipf" else "rr",
                                       level, args.duration, 1, args.direct, None, args.max_tokens, slo))
            _save(args, "adapters", levels, label=args.label)
    return _save(args, "adapters", levels, label=args.label)


def _measure(coro: Any, args: argparse.Namespace) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        doc = runner.run(coro(args))
    print(f"wrote {args.out}", file=sys.stderr)
    failed = sum(t["failed"] for lv in doc["levels"] for t in lv["targets"].values())
    return 1 if failed else 0


# ---------------------------------------------------------------- report (CPU machine)


def _n(v: Any, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def report(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    md = []
    for path in args.results:
        doc = json.loads(Path(path).read_text())
        md.append(f"## {Path(path).name} ({doc['kind']}, {doc['run']['date']}, {doc['run'].get('label', '')})\n")
        md.append("| c | mix | path | completed (failed) | output tok/s | vs first path | goodput req/s | TTFT p50 / p99 ms "
                  "| TPOT p50 / p99 ms | prompt tokens | retrieval p50 / p99 ms | gateway CPU ms/req | prefix hits |")
        md.append("|" + "---|" * 13)
        for lv in doc["levels"]:
            first = None
            for name, t in lv["targets"].items():
                first = first if first is not None else t["output_throughput"]
                pc = t["prefix_cache"]["hit_rate"]
                md.append(
                    f"| {lv['concurrency']} | {lv['mix']} | {name} | {t['completed']} ({t['failed']}) | "
                    f"{_n(t['output_throughput'])} | {t['output_throughput'] / first:.3f} | {_n(t['goodput'], 2)} | "
                    f"{_n(t['ttft_ms']['p50'])} / {_n(t['ttft_ms']['p99'])} | {_n(t['tpot_ms']['p50'], 1)} / "
                    f"{_n(t['tpot_ms']['p99'], 1)} | {_n((t['prompt_tokens'] or {}).get('mean'), 1)} | "
                    f"{_n((t['retrieval_ms'] or {}).get('p50'), 1)} / {_n((t['retrieval_ms'] or {}).get('p99'), 1)} | "
                    f"{_n(t['gateway_cpu_ms_per_request'], 1)} | {'-' if pc is None else f'{pc:.1%}'} |"
                )
        md.append("")
        if doc["kind"] == "compare":
            _plot(doc, args.out / f"{Path(path).stem}.png")
    (args.out / "tables.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def _plot(doc: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["levels"][0]["targets"])
    labels = {"direct": "vLLM alone (facts in the prompt)", "lorag-off": "lorag, retrieval off",
              "lorag-rag": "lorag, retrieval on"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in names:
        xs = [lv["concurrency"] for lv in doc["levels"]]
        a.plot(xs, [lv["targets"][name]["output_throughput"] for lv in doc["levels"]], marker="o",
               label=labels.get(name, name))
        b.plot(xs, [lv["targets"][name]["ttft_ms"]["p99"] for lv in doc["levels"]], marker="o",
               label=labels.get(name, name))
    for ax, title in ((a, "output tokens/s"), (b, "TTFT p99 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([lv["concurrency"] for lv in doc["levels"]])
        ax.set_xticklabels([str(lv["concurrency"]) for lv in doc["levels"]])
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    b.axhline(450, color="grey", linestyle="--", linewidth=1, label="TTFT SLO 450 ms")
    b.set_yscale("log")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.suptitle(f"H200, Qwen3-8B shapes, 4 LoRA adapters round-robin, RAG prompts, 256 output tokens "
                 f"({doc['run']['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot {out}", file=sys.stderr)


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python loadtest/gpu/rag_bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, default=Path("/tmp/rag"))
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--tokenizer", help="a model folder with tokenizer.json, for token counts")
    p.set_defaults(func=prepare)
    p = sub.add_parser("manifest")
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("/tmp/assistants.yaml"))
    p.set_defaults(func=manifest)
    for name, coro in (("compare", _compare), ("layouts", _layouts), ("adapters", _adapters)):
        p = sub.add_parser(name)
        p.add_argument("--direct", default="http://127.0.0.1:8000")
        p.add_argument("--gateway", default="http://127.0.0.1:8100" if name == "compare" else None)
        p.add_argument("--gateway-pid", type=Path, default=Path("/tmp/gateway.pid"))
        p.add_argument("--prompts", type=Path, default=Path("/tmp/rag/prompts.json"))
        p.add_argument("--adapters", type=int, default=4)
        p.add_argument("--levels", type=_levels, default=[1, 16, 64] if name == "compare" else [16])
        p.add_argument("--duration", type=float, default=16.0, help="seconds per path per level")
        p.add_argument("--rounds", type=int, default=2)
        p.add_argument("--max-tokens", type=int, default=256)
        p.add_argument("--slo-ttft-ms", type=float, default=450.0)
        p.add_argument("--slo-tpot-ms", type=float, default=40.0)
        p.add_argument("--layouts", default=",".join(LAYOUTS))
        p.add_argument("--mixes", default="base,rr,zipf")
        p.add_argument("--label", default="")
        p.add_argument("--out", type=Path, required=True)
        p.set_defaults(func=lambda a, c=coro: _measure(c, a))
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
