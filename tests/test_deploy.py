"""Deployment files are wired together: compose, Dockerfile, Prometheus and Kubernetes.

No Docker engine or cluster is needed: the files are parsed and cross-checked (service names,
ports, probe paths, the models config against the real settings schema). The live probe paths
themselves are exercised against a running server in tests/bench/test_live.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
PORT = 8000
# The routes the API spec gives for probes and scraping; anything else in a probe is a typo.
READY, HEALTH, METRICS = "/ready", "/health", "/metrics"
PACKAGES = ("polyclip", "encoders", "training", "export", "service", "bench")
CONTAINER_CONFIG = "deploy/docker/models.yaml"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every resource the kustomization lists, by kind."""
    kust = _yaml(K8S / "kustomization.yaml")
    docs = [_yaml(K8S / name) for name in kust["resources"]]
    return {doc["kind"]: doc for doc in docs}


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name (continuation lines joined, comments dropped)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            current = stages.setdefault(rest.split()[-1], [])
        current.append((op.upper(), rest.strip()))
    return stages


# ---- docker-compose -----------------------------------------------------------------------
def test_compose_service_waits_for_healthy_qdrant(compose: dict[str, Any]) -> None:
    svc, qdrant = compose["services"]["polyclip"], compose["services"]["qdrant"]
    assert svc["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert qdrant["image"].startswith("qdrant/qdrant:")
    assert "/readyz" in " ".join(qdrant["healthcheck"]["test"])
    storage = [v for v in qdrant["volumes"] if v.endswith(":/qdrant/storage")]
    assert storage and storage[0].split(":")[0] in compose["volumes"]


def test_compose_qdrant_url_names_the_qdrant_service(compose: dict[str, Any]) -> None:
    url = urlparse(compose["services"]["polyclip"]["environment"]["QDRANT_URL"])
    assert url.hostname == "qdrant" and url.port == 6333
    assert url.hostname in compose["services"]


def test_compose_healthcheck_and_port(compose: dict[str, Any]) -> None:
    svc = compose["services"]["polyclip"]
    probe = " ".join(svc["healthcheck"]["test"])
    assert f"127.0.0.1:{PORT}{READY}" in probe
    assert any(p.endswith(f":{PORT}") for p in svc["ports"])
    assert svc["build"]["target"] == "cpu"


def _default_mount(volumes: list[str], target: str) -> Path:
    """The host side of ``${VAR:-default}:target`` with the default taken."""
    spec = next(v for v in volumes if f":{target}:" in v)
    return ROOT / spec.split(":-", 1)[1].split("}", 1)[0]


def test_compose_mounts_exist(compose: dict[str, Any]) -> None:
    """Default host paths in the compose file point at what the repository ships."""
    volumes = compose["services"]["polyclip"]["volumes"]
    assert _default_mount(volumes, "/config/models.yaml") == ROOT / CONTAINER_CONFIG
    assert _default_mount(volumes, "/models").is_dir()
    prom = compose["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert (ROOT / prom["volumes"][0].split(":")[0]).is_file()


def test_prometheus_scrapes_the_service(compose: dict[str, Any]) -> None:
    prometheus = _yaml(ROOT / "deploy" / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    job = jobs["polyclip"]
    assert job["metrics_path"] == METRICS
    assert job["static_configs"][0]["targets"] == [f"polyclip:{PORT}"]
    for j in jobs.values():
        host = j["static_configs"][0]["targets"][0].split(":")[0]
        assert host in compose["services"]


# ---- Dockerfile ---------------------------------------------------------------------------
def test_dockerfile_targets_user_healthcheck_entrypoint() -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "cpu", "the CPU image must be the default (last) stage"
    for name in ("cpu", "gpu"):
        ops = dict(stages[name])  # last instruction of each kind wins, as in Docker
        assert ops["USER"] not in ("root", "0"), f"{name} runs as root"
        assert f"127.0.0.1:{PORT}{READY}" in ops["HEALTHCHECK"]
        assert shlex.split(ops["ENTRYPOINT"].strip("[]").replace(",", " ")) == [
            "polyclip",
            "serve",
        ]
        cmd = shlex.split(ops["CMD"].strip("[]").replace(",", " "))
        assert cmd == ["--config", "/config/models.yaml", "--host", "0.0.0.0", "--port", str(PORT)]
    gpu_from = next(rest for op, rest in stages["gpu"] if op == "FROM")
    assert "CUDA_IMAGE" in gpu_from
    assert "onnxruntime-gpu" in str(stages["build-gpu"])
    assert "download.pytorch.org/whl/cpu" in (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_docker_context_has_every_package() -> None:
    """The allow-list .dockerignore and the COPY lines cover every package pyproject installs."""
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    copied = {rest.split()[0] for op, rest in _dockerfile_stages()["src"] if op == "COPY"}
    for pkg in PACKAGES:
        assert f"!{pkg}/" in ignore, f".dockerignore leaves out {pkg}/"
        assert f"{pkg}/" in copied, f"the Dockerfile does not copy {pkg}/"
    assert "!deploy/bake/" in ignore and (ROOT / "deploy" / "bake").is_dir()


# ---- Kubernetes ---------------------------------------------------------------------------
def test_k8s_probes_and_resources(k8s: dict[str, dict[str, Any]]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    assert container["readinessProbe"]["httpGet"] == {"path": READY, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": HEALTH, "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == HEALTH
    res = container["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert k8s["Deployment"]["spec"]["replicas"] >= 2


def test_k8s_wiring(k8s: dict[str, dict[str, Any]]) -> None:
    dep, svc, cm = k8s["Deployment"], k8s["Service"], k8s["ConfigMap"]
    hpa = k8s["HorizontalPodAutoscaler"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["QDRANT_URL"]["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == cm["metadata"]["name"] and ref["key"] in cm["data"]
    assert urlparse(cm["data"]["QDRANT_URL"]).port == 6333
    # --config names the file the ConfigMap volume puts at the mount path.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    item = volume["configMap"]["items"][0]
    config_arg = container["args"][container["args"].index("--config") + 1]
    assert config_arg == f"{mounts[volume['name']]}/{item['path']}"
    assert item["key"] in cm["data"]


def test_container_models_config_is_valid(k8s: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """One container config: compose's file and the ConfigMap agree and pass the service's
    own settings schema, with every model under /models and `teacher`/`student` served."""
    from polyclip.service.config import load_settings

    text = k8s["ConfigMap"]["data"]["models.yaml"]
    assert yaml.safe_load(text) == _yaml(ROOT / CONTAINER_CONFIG)
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(path)
    assert all(m.path.startswith("/models/") for m in settings.models.values())
    assert {"teacher", "student"} <= set(settings.models) | set(settings.aliases)


def test_grace_period_outlasts_the_graceful_shutdown(k8s: dict[str, dict[str, Any]]) -> None:
    """Kubernetes kills the pod after terminationGracePeriodSeconds: it must leave the server
    its graceful shutdown and the final flush of the store."""
    from polyclip.service.cli import GRACEFUL_SHUTDOWN_S

    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= GRACEFUL_SHUTDOWN_S + 15


def test_deploy_sets_the_allowed_hosts(compose: dict[str, Any], k8s: dict[str, dict]) -> None:
    """Bound to 0.0.0.0 the default is any Host; deployments name theirs explicitly."""
    import json

    env = compose["services"]["polyclip"]["environment"]
    assert json.loads(env["POLYCLIP_ALLOWED_HOSTS"])
    container = k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"]: e for e in container["env"]}
    key = names["POLYCLIP_ALLOWED_HOSTS"]["valueFrom"]["configMapKeyRef"]["key"]
    assert json.loads(k8s["ConfigMap"]["data"][key])


def test_the_indexed_job_runs_every_shard_against_the_shared_qdrant(
    k8s: dict[str, dict[str, Any]],
) -> None:
    import re

    job = _yaml(K8S / "index-job.yaml")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    script = container["args"][0]
    shards = int(re.search(r'--shard "\$JOB_COMPLETION_INDEX/(\d+)"', script)[1])
    assert spec["completions"] == spec["parallelism"] == shards
    assert '--qdrant-url "$QDRANT_URL"' in script and "polyclip index" in script
    env = {e["name"]: e for e in container["env"]}
    ref = env["QDRANT_URL"]["valueFrom"]["configMapKeyRef"]
    assert (
        ref["name"] == k8s["ConfigMap"]["metadata"]["name"]
        and ref["key"] in k8s["ConfigMap"]["data"]
    )
    assert "--config /config/models.yaml" in script
    args = re.sub(r"\s+", " ", script).split("--")  # every flag is one polyclip index knows
    from polyclip.__main__ import build_parser

    index = build_parser()._subparsers._group_actions[0].choices["index"]
    known = {o.lstrip("-") for a in index._actions for o in a.option_strings}
    assert {a.split()[0] for a in args[1:]} <= known
