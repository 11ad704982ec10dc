#!/usr/bin/env bash
# The product path on the GPU host, retrieval on: one step list per device call (loadtest/gpu/README.md, "Retrieval
# on"). Run from the repo root after the wheel chunks are in /tmp/w and the extras in /tmp/x (or, on any GPU host
# with `pip install -e '.[gpu]'`, point MODEL_DIR/LORA_DIR at real folders and start at `engine`).
# Usage: bash loadtest/gpu/rag.sh STEP...    (results in $OUT, log $OUT/rag-log.txt)
#   unpack       the carried parts (.whl/c1..c7, 32 MiB each, copied into /tmp/w call by call) joined: vLLM's wheel
#                chunks, the extras (ragx.tar.xz -> /tmp/x) and the extra wheels (limits, deprecated, peft)
#   setup        .gpu/ from loadtest/gpu; setup.sh (vLLM into /tmp/site, dummy Qwen3-8B, 16 adapters); the extras
#                (qdrant-client and sentence-transformers wheels, MiniLM back to fp32 in /tmp/minilm, Qwen's real
#                tokenizer over the dummy model's whitespace one)
#   engine N [LABEL]   start vLLM with N adapters (env MAX_LORAS, MAX_NUM_SEQS, EXTRA_ARGS), prefix-cache reset on
#   ready [LABEL]      wait for it; its start timings and GPU memory to $OUT/engine-LABEL.txt
#   prepare      ingest the demo catalog, render every conversation as vLLM gets it, the gateway's manifest
#   gateway      lorag serve on :8100 (retrieval: /tmp/rag/qdrant, MiniLM on the CPU), then a check that the gateway
#                and vLLM directly see the same prompt
#   warmup       bench.sh warmup (Triton JIT of the sampler and LoRA kernels), not recorded
#   compare      vLLM alone / lorag retrieval off / retrieval on, c=LEVELS (1,16,64) -> $OUT/compare$COMPARE_TAG.json
#   layouts      prompt layouts against the prefix cache, direct, c=1,16 -> $OUT/layouts.json
#   swap         hot-swap of a1 under 16 clients with retrieval on -> $OUT/swap.json
#   adapters LABEL LEVELS  base, 16 adapters round-robin, Zipf; direct -> $OUT/adapters-LABEL.json
#   memory LABEL an eager engine start that only reports memory (no benchmark); vLLM args from MEMORY_ARGS_LABEL
#                (or MEMORY_ARGS); the engine stays up until the next engine/memory/stopall step
#   probe NAME   one chat request to vLLM for model NAME (an adapter loaded with --lora-modules, say)
#   stopall      stops the gateway and vLLM (frees the GPU)
#   train        random bf16 weights for the Qwen3-8B folder, a `lorag train dataset` from the demo catalog, then
#                `lorag train lora` at rank 16 and 64 (TRAIN_STEPS, 40) -> $OUT/train-log.txt (train_gpu.py)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)" && cd "$repo"
out="${OUT:-/tmp/out}" && mkdir -p "$out"
log="$out/rag-log.txt"
exec > >(tee -a "$log") 2>&1
mkdir -p .gpu && cp "$here"/* .gpu/
source .gpu/env.sh
export PYTHONPATH="$PYTHONPATH:$repo" VLLM_SERVER_DEV_MODE=1
export LORAG_QDRANT_PATH="${LORAG_QDRANT_PATH:-/tmp/rag/qdrant}" LORAG_EMBEDDING_MODEL=/tmp/minilm
t0=$EPOCHREALTIME
stamp() { awk -v a="$t0" -v b="$EPOCHREALTIME" -v s="$1" 'BEGIN { printf "[%6.1f s] %s\n", b - a, s }'; }

unpack() {
  cat /tmp/w/part.* | tar x -C /tmp/w || exit 1
  (cd /tmp/w && sha256sum --quiet -c SUMS) || exit 1
  mkdir -p /tmp/x && tar xJf /tmp/w/ragx.tar.xz -C /tmp/x && cp /tmp/w/extra/*.whl /tmp/x/wheels/ || exit 1
  rm -f /tmp/w/part.* && ls /tmp/w /tmp/x/wheels
}

setup() {
  bash .gpu/setup.sh 16 16 || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/x/wheels/*.whl || exit 1
  python3 - <<'PY' || exit 1
import shutil, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path("/tmp/x/minilm"), Path("/tmp/minilm")
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.fp16.safetensors"))
t = load_file(src / "model.fp16.safetensors")
save_file({k: (v.float() if v.dtype == torch.float16 else v).contiguous() for k, v in t.items()},
          dst / "model.safetensors", metadata={"format": "pt"})
print("MiniLM (fp16 weights carried, fp32 again) in", dst)
PY
  cp /tmp/x/qwen-tokenizer/* "$MODEL_DIR"/ && echo "Qwen tokenizer copied into $MODEL_DIR"
  python3 -c "import qdrant_client, sentence_transformers, transformers; print('qdrant-client', qdrant_client.__version__ if hasattr(qdrant_client, '__version__') else '?', 'sentence-transformers', sentence_transformers.__version__, 'transformers', transformers.__version__)"
}

engine() { bash .gpu/start_engine.sh "$1" 16; }

ready() {
  local label="${1:-engine}"
  bash .gpu/wait_ready.sh 540 > "/tmp/ready-$label.txt"; local rc=$?
  cat "/tmp/ready-$label.txt"
  { cat "/tmp/ready-$label.txt"; echo "--- args"; grep -m1 -E "non-default args|args:" /tmp/vllm.log | cut -c1-1500
    grep -E "Model loading took|LoRA|KV cache|Available|CUDA graph|Memory profiling|memory" /tmp/vllm.log | sed -E 's/^.*\] //' | cut -c1-220 | head -40
    nvidia-smi --query-gpu=memory.used,memory.total --format=csv; } > "$out/engine-$label.txt"
  [ $rc -eq 0 ] || exit 1
}

prepare() {
  mkdir -p /tmp/rag
  # On the CPU by default: prepare runs while vLLM starts and profiles its memory, which a second process taking
  # GPU memory would disturb. The gateway later embeds on the device LORAG_EMBEDDING_DEVICE says.
  LORAG_EMBEDDING_DEVICE="${PREPARE_EMBEDDING_DEVICE:-cpu}" \
    python3 .gpu/rag_bench.py prepare --work /tmp/rag --tokenizer "$MODEL_DIR" > /tmp/rag/prepare.json || exit 1
  python3 - <<'PY'
import json; d = json.load(open("/tmp/rag/prepare.json")); print(json.dumps(d))
PY
  cp /tmp/rag/prepare.json "$out/prompts-stats.json"
  python3 .gpu/rag_bench.py manifest --adapters 4 --out /tmp/assistants.yaml
}

gateway() {
  GATEWAY_WAIT_S=120 bash .gpu/lorag.sh start wait || exit 1
  python3 - <<'PY'
import json, urllib.request
entry = json.load(open("/tmp/rag/prompts.json"))["entries"][0]
def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read()), dict(r.headers)
g, h = post("http://127.0.0.1:8100/v1/chat/completions", {"model": "a1", "messages": entry["messages"], "max_tokens": 4})
d, _ = post("http://127.0.0.1:8000/v1/chat/completions", {"model": "a1", "messages": entry["rendered"]["default"], "max_tokens": 4})
o, _ = post("http://127.0.0.1:8100/v1/chat/completions", {"model": "a1-off", "messages": entry["rendered"]["default"], "max_tokens": 4})
print("same prompt check: gateway rag", g["usage"]["prompt_tokens"], "tokens, direct", d["usage"]["prompt_tokens"],
      ", gateway off", o["usage"]["prompt_tokens"], "; sources", [s["id"] for s in g.get("sources", [])],
      "expected", entry["products"], "; server-timing", h.get("server-timing"))
PY
}

gpu_apps() {
  # Which processes hold GPU memory: with LORAG_EMBEDDING_DEVICE=auto the gateway's embedder is one of them.
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv | tee "$out/gpu-apps${COMPARE_TAG:-}.txt"
  echo "gateway pid $(cat /tmp/gateway.pid); LORAG_EMBEDDING_* set: $(env | grep ^LORAG_EMBEDDING_ | tr '\n' ' ')" \
    | tee -a "$out/gpu-apps${COMPARE_TAG:-}.txt"
}

stopall() {
  bash .gpu/lorag.sh stop || true
  if [ -f /tmp/vllm.pid ] && kill -0 "$(cat /tmp/vllm.pid)" 2>/dev/null; then
    kill -- "-$(cat /tmp/vllm.pid)"; for _ in $(seq 60); do kill -0 "$(cat /tmp/vllm.pid)" 2>/dev/null || break; sleep 1; done; sleep 3
  fi
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv
}

probe() {
  python3 - "$1" <<'PY'
import json, sys, time, urllib.error, urllib.request
body = {"model": sys.argv[1], "messages": [{"role": "user", "content": "How much is the Aeropress?"}], "max_tokens": 8}
req = urllib.request.Request("http://127.0.0.1:8000/v1/chat/completions", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
t = time.perf_counter()
try:
    with urllib.request.urlopen(req, timeout=120) as r:
        print(f"probe {sys.argv[1]}: {r.status} in {(time.perf_counter() - t) * 1000:.0f} ms, usage",
              json.loads(r.read())["usage"])
except urllib.error.HTTPError as e:
    print(f"probe {sys.argv[1]}: {e.code} {e.read().decode()[:300]}")
PY
  curl -s http://127.0.0.1:8000/v1/models | python3 -c 'import json,sys; print("served:", [m["id"] for m in json.load(sys.stdin)["data"]])'
}

train() {
  local steps="${TRAIN_STEPS:-40}"
  python3 .gpu/train_gpu.py weights --config-dir "$MODEL_DIR" --out /tmp/qwen3-8b-rand | tee -a "$out/train-log.txt" || exit 1
  mkdir -p /tmp/train
  python3 -m lorag train dataset --catalog /tmp/rag/catalog.jsonl --out /tmp/train/data --samples 1000 --eval-samples 50 \
    | tail -n 20 || exit 1
  for rank in 16 64; do
    python3 .gpu/train_gpu.py run --base /tmp/qwen3-8b-rand --data /tmp/train/data --out "/tmp/train/r$rank" \
      --rank "$rank" --steps "$steps" --batch 8 --max-length 1024 2> "/tmp/train/r$rank.err" | tee -a "$out/train-log.txt"
    tail -c 600 "/tmp/train/r$rank.err"
    cp "/tmp/train/r$rank/run.json" "$out/train-r$rank-run.json" 2>/dev/null
    ls -la "/tmp/train/r$rank"
  done
}

case_compare() {
  python3 .gpu/rag_bench.py compare --levels "${LEVELS:-1,16,64}" --duration "${DURATION:-14}" --rounds 2 --out "$out/compare${COMPARE_TAG:-}.json"
}

case_layouts() {
  python3 .gpu/rag_bench.py layouts --levels "${LAYOUT_LEVELS:-1,16}" --duration "${LAYOUT_DURATION:-10}" --out "$out/layouts.json"
}

case_swap() {
  python3 -m loadtest.swap --gateway http://127.0.0.1:8100 --admin-key bench --adapter a1 \
    --versions "$LORA_DIR/a6,$LORA_DIR/a5" --load-models a1,a2,a3,a4 --swaps 6 --clients 16 --max-tokens 64 \
    --out "$out/swap${COMPARE_TAG:-}.json"
}

case_adapters() {
  python3 .gpu/rag_bench.py adapters --adapters 16 --levels "${2:-64}" --duration "${ADAPTER_DURATION:-15}" \
    --label "$1" --out "$out/adapters-$1.json"
}

memory() {
  local label="$1"; shift
  if [ -f /tmp/vllm.pid ] && kill -0 "$(cat /tmp/vllm.pid)" 2>/dev/null; then
    kill -- "-$(cat /tmp/vllm.pid)"; for _ in $(seq 60); do kill -0 "$(cat /tmp/vllm.pid)" 2>/dev/null || break; sleep 1; done; sleep 3
  fi
  echo "$EPOCHREALTIME" > /tmp/vllm.started
  setsid nohup python3 -m vllm.entrypoints.openai.api_server --model "$MODEL_DIR" --served-model-name qwen3-8b \
    --load-format dummy --dtype bfloat16 --max-model-len 4096 --max-num-seqs 64 --attention-backend FLASH_ATTN \
    --enforce-eager --host 127.0.0.1 --port "$PORT" "$@" > /tmp/vllm.log 2>&1 < /dev/null &
  echo $! > /tmp/vllm.pid
  ready "mem-$label"
}

while [ $# -gt 0 ]; do
  step="$1"; shift
  stamp "step $step"
  case "$step" in
    setup) setup ;;
    engine) engine "$1"; shift ;;
    ready) ready "$1"; shift ;;
    prepare) prepare ;;
    gateway) gateway ;;
    warmup) bash .gpu/bench.sh warmup ;;
    compare) case_compare ;;
    layouts) case_layouts ;;
    swap) case_swap ;;
    adapters) case_adapters "$1" "$2"; shift 2 ;;  # LABEL LEVELS, both given
    memory) label="$1"; shift; margs="MEMORY_ARGS_$label"; memory "$label" ${!margs:-${MEMORY_ARGS:-}} ;;
    unpack) unpack ;;
    gpu_apps) gpu_apps ;;
    stopall) stopall ;;
    probe) probe "$1"; shift ;;
    train) train ;;
    *) echo "rag.sh: unknown step $step" >&2; exit 2 ;;
  esac
done
stamp "done"
