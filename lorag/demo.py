"""`make demo`: vLLM serving the demo kit and the gateway in front of it, until Ctrl-C.

    python -m lorag.demo --kit build/demo-kit --qdrant-path build/qdrant

The demo catalog must already be ingested at --qdrant-path (`make demo` runs `lorag catalog ingest` first).
Once the gateway answers /ready, a curl and an OpenAI-SDK example are printed; both work as printed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

from adapters.demo_kit.kit import load_kit
from lorag.launcher import Engine, kit_spec
from retrieval.demo_catalog import demo_catalog
from server.app import create_app
from server.assistants import Registry
from server.settings import GatewaySettings

ASSISTANTS = ["product-expert", "support-agent", "sales-assistant", "generic"]


def examples(base_url: str, admin_key: str = "", version: Path | None = None) -> str:
    """The examples printed for the demo, about a product of the demo catalog."""
    question = f"How much is the {demo_catalog()[3].name}?"
    swap = ""
    if admin_key and version is not None:
        swap = (
            '\nHot-swap support-agent to its second version (answers then start "Thanks for asking!"), and back:\n'
            f"export LORAG_ADMIN_KEY={admin_key} LORAG_GATEWAY_URL={base_url}\n"
            f".venv/bin/lorag adapters swap support-agent --path {version}\n"
            ".venv/bin/lorag adapters rollback support-agent\n"
        )
    return f"""
The gateway is ready: {base_url}/v1 (assistants: {", ".join(ASSISTANTS)}; metrics at {base_url}/metrics)

curl:
curl -s {base_url}/v1/chat/completions -H 'content-type: application/json' -d '{{
  "model": "support-agent", "max_tokens": 60,
  "messages": [{{"role": "user", "content": "{question}"}}]}}'

OpenAI SDK (each assistant, then a stream):
.venv/bin/python - <<'EOF'
from openai import OpenAI

client = OpenAI(base_url="{base_url}/v1", api_key="unused")
question = [{{"role": "user", "content": "{question}"}}]
for model in {ASSISTANTS!r}:
    answer = client.chat.completions.create(model=model, messages=question, max_tokens=60)
    print(f"{{model:>16}}: {{answer.choices[0].message.content}}")
print("sources:", answer.model_extra["sources"])
for chunk in client.chat.completions.create(model="sales-assistant", messages=question, max_tokens=60, stream=True):
    print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="", flush=True)
print()
EOF
{swap}"""


def _announce(server: uvicorn.Server, base_url: str, text: str) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.2)
    if server.started and httpx.get(f"{base_url}/ready", timeout=30).status_code == 200:
        print(text, flush=True)
    elif server.started:
        print(f"the gateway is up but not ready: curl {base_url}/ready", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kit", type=Path, default=Path("build/demo-kit"))
    parser.add_argument("--qdrant-path", type=Path, default=Path("build/qdrant"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="the gateway's port")
    parser.add_argument("--engine-port", type=int, default=8001)
    args = parser.parse_args(argv)

    kit = load_kit(args.kit)
    settings = GatewaySettings(host=args.host, port=args.port, qdrant_path=args.qdrant_path)
    # The demo turns the admin API on (a fresh key unless LORAG_ADMIN_KEY is set) with the kit as adapter root.
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else secrets.token_urlsafe(12)
    settings = settings.model_copy(
        update={
            "admin_key": SecretStr(admin_key),
            "adapter_roots": settings.adapter_roots or [args.kit],
            "state_file": Path("build/adapters.json"),
        }
    )
    registry = Registry.from_file(settings.assistants)
    if registry.base_model != kit.name:
        print(
            f"{settings.assistants} names base model {registry.base_model!r}, the kit serves {kit.name!r}",
            file=sys.stderr,
        )
        return 2
    spec = kit_spec(kit, args.engine_port)
    engine = Engine(spec, log_path=Path("build/engine.log"))
    print(f"starting vLLM on {spec.url} (log: {engine.log_path}); this takes a minute on a CPU", flush=True)
    with engine:
        print(f"engine ready in {engine.ready_seconds:.0f} s", flush=True)
        settings = settings.model_copy(update={"upstream_url": engine.url})
        base_url = f"http://{args.host}:{args.port}"
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host=args.host, port=args.port, log_level="info"))
        text = examples(base_url, admin_key, kit.versions.get("support-agent-v2"))
        threading.Thread(target=_announce, args=(server, base_url, text), daemon=True).start()
        server.run()  # until Ctrl-C; leaving the block then stops the engine
    return 0


if __name__ == "__main__":
    sys.exit(main())
