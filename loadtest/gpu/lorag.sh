#!/usr/bin/env bash
# The lorag gateway on the GPU host, in front of the engine that start_engine.sh started (run after setup.sh).
# Usage: bash .gpu/lorag.sh [STEP...]   (from the repo root; default: install manifest start wait smoke)
#   install   the gateway's wheels that the image and the vLLM chunks lack (.whl/lorag/*.whl) into /tmp/site,
#             then an import check of the gateway from this checkout (PYTHONPATH=/tmp/site:<repo>)
#   manifest  /tmp/assistants.yaml: base_model qwen3-8b; assistants qwen3-8b (adapter null) and a1..aN
#             (adapter aN), retrieval off, no persona, no sampling defaults, so the payload vLLM gets is the
#             client's (the gateway adds no system message when an assistant neither retrieves nor has a persona)
#   start     `python3 -m lorag serve` detached with setsid (outlives the device call), log /tmp/gateway.log;
#             stops a gateway this script started before
#   wait      polls GET /health (GATEWAY_WAIT_S, 60 s), then prints GET /ready (vLLM serves every assistant's model)
#   smoke     one short request per assistant, non-streamed and streamed, and whether the gateway accepts
#             `ignore_eos` (vllm bench serve always sends it with --dataset-name random)
#   stop      stops the gateway
#   env: ADAPTERS (4), RANK (16), GATEWAY_PORT (8100), GATEWAY_WORKERS (1), PORT (vLLM, 8000), GATEWAY_ARGS (extra serve args)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)" && cd "$repo"
source "$here/env.sh"
export PYTHONPATH="$PYTHONPATH:$repo"
n="${ADAPTERS:-4}" gport="${GATEWAY_PORT:-8100}"
manifest=/tmp/assistants.yaml

install() {
  local t0=$EPOCHREALTIME
  if compgen -G "$repo/.whl/lorag/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$repo"/.whl/lorag/*.whl
  else
    echo "lorag.sh: no .whl/lorag/*.whl (carry .whl/lorag); the gateway runs without qdrant-client only if no assistant retrieves"
  fi
  python3 - <<'PY'
import importlib, sys, time
t = time.perf_counter()
import server.app, lorag.serve, lorag.cli  # the gateway as `lorag serve` runs it
def version(name):
    try:
        from importlib.metadata import version as v
        return v(name)
    except Exception:
        return "?"
print(f"gateway imports ok in {time.perf_counter() - t:.1f} s; python {sys.version.split()[0]}; " + ", ".join(
    f"{n} {version(n)}" for n in ("fastapi", "starlette", "uvicorn", "httpx", "pydantic", "pydantic-settings",
                                  "uvloop", "httptools", "prometheus-client", "pyyaml")))
for optional in ("qdrant_client", "retrieval.store", "matplotlib", "tqdm"):
    try:
        importlib.import_module(optional)
    except Exception as exc:  # not needed while no assistant retrieves
        print(f"  optional import {optional} failed: {exc!r}")
PY
  awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "lorag install + import check: %.1f s\n", b - a }'
}

manifest() {
  {
    echo "# lorag on the GPU host: the engine's names, no retrieval, no persona, no sampling defaults."
    echo "base_model: qwen3-8b"
    echo "assistants:"
    echo "  - {name: qwen3-8b, adapter: null, retrieval: {enabled: false}, max_tokens: 4096}"
    for i in $(seq 1 "$n"); do
      echo "  - {name: a$i, adapter: a$i, retrieval: {enabled: false}, max_tokens: 4096}"
    done
  } > "$manifest"
  echo "manifest $manifest: qwen3-8b a1..a$n"
}

stop() {
  if [ -f /tmp/gateway.pid ] && kill -0 "$(cat /tmp/gateway.pid)" 2>/dev/null; then
    kill -- "-$(cat /tmp/gateway.pid)" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$(cat /tmp/gateway.pid)" 2>/dev/null || break; sleep 0.5; done
    echo "gateway stopped"
  fi
}

start() {
  stop
  [ -f "$manifest" ] || manifest
  mkdir -p /tmp/lorag-state
  echo "$EPOCHREALTIME" > /tmp/gateway.started
  # LORAG_STATE_FILE / LORAG_ADAPTER_ROOTS / LORAG_MAX_LORA_RANK: read by the hot-swap version of the gateway
  # (ignored by the settings of one without it: extra="ignore"); they keep its state out of the checkout.
  # shellcheck disable=SC2086  # GATEWAY_ARGS: several words
  LORAG_UPSTREAM_URL="http://127.0.0.1:$PORT" LORAG_ASSISTANTS="$manifest" LORAG_ACCESS_LOG=false \
    LORAG_ADMIN_KEY="${LORAG_ADMIN_KEY:-bench}" LORAG_STATE_FILE=/tmp/lorag-state/adapters.json LORAG_ADAPTER_ROOTS="$LORA_DIR" LORAG_MAX_LORA_RANK="${RANK:-16}" \
    setsid nohup python3 -m lorag serve --host 127.0.0.1 --port "$gport" --workers "${GATEWAY_WORKERS:-1}" \
      --no-access-log --log-level info ${GATEWAY_ARGS:-} > /tmp/gateway.log 2>&1 < /dev/null &
  echo $! > /tmp/gateway.pid
  echo "gateway starting: pid $(cat /tmp/gateway.pid), http://127.0.0.1:$gport -> vLLM :$PORT, workers ${GATEWAY_WORKERS:-1}, log /tmp/gateway.log"
}

wait_ready() {
  local timeout="${GATEWAY_WAIT_S:-60}" started
  started="$(cat /tmp/gateway.started)"
  until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$gport/health', timeout=2)" 2>/dev/null; do
    if ! kill -0 "$(cat /tmp/gateway.pid)" 2>/dev/null; then
      echo "gateway exited; log:"; tail -n 60 /tmp/gateway.log; exit 1
    fi
    if awk -v a="$started" -v b="$EPOCHREALTIME" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
      echo "gateway not answering after $timeout s; log:"; tail -n 60 /tmp/gateway.log; exit 1
    fi
    sleep 0.5
  done
  awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "gateway /health answered %.1f s after start\n", b - a }'
  python3 - "$gport" <<'PY'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=10) as r:
        print("/ready", r.status, r.read().decode()[:400])
except urllib.error.HTTPError as e:
    print("/ready", e.code, e.read().decode()[:400])
PY
}

smoke() {
  python3 - "$gport" "$n" <<'PY'
import json, sys, time, urllib.error, urllib.request
port, n = sys.argv[1], int(sys.argv[2])
url = f"http://127.0.0.1:{port}/v1/chat/completions"
def post(body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(), time.perf_counter() - t
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.perf_counter() - t
msg = [{"role": "user", "content": [{"type": "text", "text": "t1 t2 t3 t4 t5 t6 t7 t8"}]}]
bad = 0
for model in ["qwen3-8b"] + [f"a{i}" for i in range(1, n + 1)]:
    status, body, s = post({"model": model, "messages": msg, "max_completion_tokens": 8})
    ok = status == 200 and json.loads(body)["usage"]["completion_tokens"] > 0
    bad += not ok
    status2, body2, s2 = post({"model": model, "messages": msg, "max_completion_tokens": 8, "stream": True,
                               "stream_options": {"include_usage": True}})
    ok2 = status2 == 200 and body2.rstrip().endswith("data: [DONE]") and '"usage"' in body2
    bad += not ok2
    print(f"smoke {model}: plain {status} {s*1000:.0f} ms{'' if ok else ' ' + body[:300]}; "
          f"stream {status2} {s2*1000:.0f} ms{'' if ok2 else ' ' + body2[-300:]}")
status, body, _ = post({"model": "qwen3-8b", "messages": msg, "max_completion_tokens": 4, "ignore_eos": True})
print(f"ignore_eos through the gateway: {status} " + ("accepted" if status == 200 else "REFUSED: " + body[:200]))
status, body, _ = post({"model": "qwen3-8b", "messages": msg, "max_completion_tokens": 4, "min_tokens": 4})
print(f"min_tokens through the gateway: {status} " + ("accepted" if status == 200 else "REFUSED: " + body[:200]))
sys.exit(1 if bad else 0)
PY
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(install manifest start wait smoke)
for step in "${steps[@]}"; do
  case "$step" in
    install) install ;; manifest) manifest ;; start) start ;; wait) wait_ready ;; smoke) smoke ;; stop) stop ;;
    *) echo "lorag.sh: unknown step $step" >&2; exit 2 ;;
  esac
done
