#!/usr/bin/env bash
# Chat benchmark, vLLM direct against the lorag gateway, interleaved (direct, gateway, direct, gateway per case).
# Usage: bash .gpu/chat_bench.sh CASE...   CASE: base | N (adapters a1..aN round-robin); see chat_bench.py's
# docstring for the environment (TARGETS, NUM_PROMPTS, CONCURRENCY, INPUT_LEN, OUTPUT_LEN, SEED_BASE, EOS_MODE).
# Needs: the engine (start_engine.sh N) and the gateway (lorag.sh) running. Results: $OUT/chat-<cases>.{json,txt}.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
exec python3 "$here/chat_bench.py" "$@"
