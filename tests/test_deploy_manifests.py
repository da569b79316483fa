"""deploy/'s manifests checked against the code: the RECD_* variables they and the ops guide use are
settings, and the files compose, the k8s manifests, the Dockerfile and Grafana's provisioning refer to
exist and agree. Nothing here runs Docker or Kubernetes (these machines have neither).
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from daemon.runtime.settings import ENV_PREFIX, Settings, env_name
from tests.deployfiles import DASHBOARDS, DEPLOY, OPS_GUIDE, ROOT, load_yaml

# ----- settings


def test_every_recd_variable_in_deploy_and_the_guide_is_a_setting() -> None:
    settings = {env_name(f.name) for f in dataclasses.fields(Settings)} | {ENV_PREFIX + "CONFIG"}
    used: dict[str, set[str]] = {}
    for path in [*DEPLOY.rglob("*"), OPS_GUIDE]:
        if path.is_file() and path.suffix != ".py":
            for name in re.findall(r"\bRECD_[A-Z0-9_]+", path.read_text(encoding="utf-8")):
                used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert len(used) > 10
    unknown = {name: sorted(where) for name, where in used.items() if name not in settings}
    assert not unknown, f"RECD_* variables that daemon/runtime/settings.py does not read: {unknown}"


# ----- docker compose


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")[0]
    return doc


def test_compose_images_ports_and_healthchecks() -> None:
    services = compose()["services"]
    assert {"kafka", "kafka-init", "redis", "recd", "trainer", "trainer-cpu", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert re.fullmatch(r"[\w.\-/]+:[\w.\-]+", image) and not image.endswith(":latest"), f"{name}: {image!r}"
        for port in svc.get("ports", []):
            assert re.fullmatch(r"(\d+:)?\d+", str(port)), f"{name}: port {port!r}"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    for name in ("kafka", "redis"):
        assert "healthcheck" in services[name], name
    assert "9108" in services["recd"]["ports"] and services["recd"]["environment"]["RECD_METRICS_PORT"] == "9108"
    redis_args = services["redis"]["command"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"  # AOF
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_compose_volumes_and_files_exist() -> None:
    doc = compose()
    named = set(doc["volumes"])
    for name, svc in doc["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist (relative to deploy/)"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        build = svc.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
    dashboards = doc["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert dashboards.startswith("/var/lib/grafana/dashboards/")
    assert (DEPLOY / "grafana" / "dashboards" / Path(dashboards).name).is_file()


def test_compose_trainer_gets_a_gpu_or_runs_on_cpu() -> None:
    services = compose()["services"]
    gpu, cpu = services["trainer"], services["trainer-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["RECD_DEVICE"] == "cuda"
    assert cpu["profiles"] == ["cpu"] and cpu["environment"]["RECD_DEVICE"] == "cpu"
    for svc in (gpu, cpu):
        assert svc["command"] == ["run", "--roles", "train"]
    assert services["recd"]["command"] == ["run", "--roles", "ingest,serve"]


def test_prometheus_scrapes_the_compose_services() -> None:
    services = compose()["services"]
    names = set(services) | {
        a
        for svc in services.values()
        for net in (svc.get("networks") or {}).values()
        for a in (net or {}).get("aliases", [])
    }
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in ("recd", "recd-trainer"):
        for sd in jobs[job]["dns_sd_configs"]:
            assert set(sd["names"]) <= names and sd["port"] == 9108, job
    assert config["rule_files"] == ["rules.yml"]
    mounts = services["prometheus"]["volumes"]
    assert "./prometheus/rules.yml:/etc/prometheus/rules.yml:ro" in mounts


# ----- Kubernetes


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, for every file kustomization.yaml lists (which must all exist)."""
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")[0]
    objects = {}
    for resource in kustomization["resources"]:
        for obj in load_yaml(DEPLOY / "k8s" / resource):
            assert obj["metadata"].get("namespace", "recd") == "recd", obj["metadata"]
            objects[(obj["kind"], obj["metadata"]["name"])] = obj
    listed = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == set(kustomization["resources"]), "k8s files missing from kustomization.yaml"
    return objects


def workloads() -> dict[str, dict[str, Any]]:
    return {name: obj for (kind, name), obj in k8s_objects().items() if kind == "Deployment"}


def check_probes(name: str, container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get("metrics") == 9108, f"{name}: metrics port"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "metrics"), f"{name}: {probe}"


def test_k8s_deployments_have_probes_resources_and_security() -> None:
    config = k8s_objects()[("ConfigMap", "recd-config")]["data"]
    assert config["RECD_METRICS_PORT"] == "9108" and config["RECD_HTTP_HOST"] == "0.0.0.0"
    found = workloads()
    assert set(found) == {"recd", "recd-trainer"}
    for name, deployment in found.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            check_probes(name, container)
            requests = container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(requests), f"{name}: resource requests"
            assert "memory" in container["resources"]["limits"], name
    trainer = found["recd-trainer"]["spec"]["template"]["spec"]["containers"][0]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == trainer["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert trainer["args"] == ["run", "--roles", "train"]
    assert found["recd"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["run", "--roles", "ingest,serve"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_k8s_pdb_and_services_select_the_pods() -> None:
    objects = k8s_objects()
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in workloads().items()}
    pdb = objects[("PodDisruptionBudget", "recd")]["spec"]
    assert selects(pdb["selector"]["matchLabels"], pods["recd"])
    assert not selects(pdb["selector"]["matchLabels"], pods["recd-trainer"])
    services = {name: obj for (kind, name), obj in objects.items() if kind == "Service"}
    for target in ("recd", "recd-trainer"):
        matching = [s for s, obj in services.items() if selects(obj["spec"]["selector"], pods[target])]
        assert len(matching) == 1, f"{target}: services {matching}"
        assert [p["targetPort"] for p in services[matching[0]]["spec"]["ports"]] == ["metrics"]
    monitor = objects[("ServiceMonitor", "recd")]["spec"]
    assert all(selects(monitor["selector"]["matchLabels"], s["metadata"]["labels"]) for s in services.values())
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]


def test_k8s_config_and_secret_keys_are_recd_settings() -> None:
    objects = k8s_objects()
    settings = {env_name(f.name) for f in dataclasses.fields(Settings)}
    for (_kind, name), obj in objects.items():
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                ref_kind = "ConfigMap" if "configMapRef" in source else "Secret"
                target = objects[(ref_kind, ref["name"])]
                keys = set(target.get("data") or {}) | set(target.get("stringData") or {})
                assert keys and keys <= settings, f"{name} gets {ref_kind} {ref['name']}: {sorted(keys - settings)}"
            for env in container.get("env", []):
                assert not env["name"].startswith(ENV_PREFIX) or env["name"] in settings, f"{name}: {env['name']}"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in objects, f"{name}: {volume}"
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects, name


# ----- image and Grafana


def test_dockerfile_matches_the_project() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert 'ENTRYPOINT ["recd"]' in text and "recd" in project["project"]["scripts"]
    default_port = next(f.default for f in dataclasses.fields(Settings) if f.name == "metrics_port")
    assert f"EXPOSE {default_port}" in text and f"RECD_METRICS_PORT={default_port}" in text
    assert "/healthz" in text and "USER 10001:10001" in text  # k8s runAsUser 10001
    kept = re.findall(r"^!(\S+?)/?$", (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8"), flags=re.M)
    assert "pyproject.toml" in kept
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in kept, f"the image build context leaves out {package}"


def test_grafana_dashboard_and_provisioning() -> None:
    compose_mounts = compose()["services"]["grafana"]["volumes"]
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "recd.yaml")[0]["providers"][0]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in compose_mounts
    source = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")[0]["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for path in DASHBOARDS:
        board = json.loads(path.read_text(encoding="utf-8"))
        panels = board["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            for target in panel.get("targets", []):
                assert target["expr"].strip(), f"{path.name}: {panel['title']}: empty expr"
                assert panel["datasource"]["uid"] == "${datasource}", f"{path.name}: {panel['title']}"
