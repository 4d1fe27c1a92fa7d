"""The Kubernetes manifests (k8s/), checked offline.

Each overlay is rendered by kustomize itself (the Go module, built once into .cache/bin by
scripts/build-kustomize.sh). Every rendered object is validated against the Kubernetes JSON
schemas shipped in the kubernetes-validate package (strict: unknown fields are errors), and the
operators' custom resources against the CRD schemas kept in k8s/crds/. Then the manifests are
cross-checked with the code: environment variables against app.settings.ENV_VARS, ports against
the settings' defaults, topics against app.contract.TOPICS, partitions against TOPIC_PARTITIONS,
Services and NetworkPolicies against the pods that exist.
"""

from __future__ import annotations

import configparser
import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app import contract
from app.settings import ENV_VARS, Settings, load

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
#: The oldest Kubernetes the manifests are written for, and the newest the package knows.
K8S_VERSIONS = ("1.32", kubernetes_validate.utils.latest_version())
#: Environment variables a container may get that are not settings: for composing one
#: (POD_*), for composing the dashboard's command (DASHBOARD_ORIGIN), read by Panel itself
#: (PANEL_COOKIE_SECRET).
NON_SETTINGS_ENV = {"POD_NAME", "POD_NAMESPACE", "DASHBOARD_ORIGIN", "PANEL_COOKIE_SECRET"}
#: Built-in API versions allowed (current, non-deprecated ones).
BUILTIN_APIS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2",
                "networking.k8s.io/v1"}
CRD_FILES = {
    "Kafka": "040-Crd-kafka.yaml",
    "KafkaTopic": "043-Crd-kafkatopic.yaml",
    "KafkaNodePool": "045-Crd-kafkanodepool.yaml",
    "MongoDBCommunity": "mongodbcommunity.mongodb.com_mongodbcommunity.yaml",
}
WORKLOADS = ("Deployment", "StatefulSet", "CronJob")
DEFAULTS = Settings()


# --- rendering -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kustomize() -> str:
    """The kustomize binary, built once (cached in .cache/bin)."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-kustomize.sh")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"building kustomize failed:\n{out.stderr}"
    return out.stdout.strip().splitlines()[-1]


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def render(kustomize: str, overlay: str) -> list[dict[str, Any]]:
    if overlay not in _RENDERED:
        out = subprocess.run([kustomize, "build", str(K8S / "overlays" / overlay)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        _RENDERED[overlay] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return copy.deepcopy(_RENDERED[overlay])


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def docs(kustomize: str, overlay: str) -> list[dict[str, Any]]:
    return render(kustomize, overlay)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = [d for d in of_kind(docs, "ConfigMap")
             if d["metadata"]["name"].startswith("txn-config")]
    return cm["data"]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def pods(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) of every Deployment, StatefulSet and CronJob."""
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, pod_spec(d)


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload, template in pods(docs):
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            yield workload, c


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (Service-style map or matchLabels/matchExpressions) against labels."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        for expr in selector.get("matchExpressions", []):
            value, op = labels.get(expr["key"]), expr["operator"]
            ok = {"In": value in expr.get("values", []),
                  "NotIn": value not in expr.get("values", []),
                  "Exists": expr["key"] in labels,
                  "DoesNotExist": expr["key"] not in labels}[op]
            if not ok:
                return False
        selector = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in selector.items())


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def url_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


def arg_after(command: list[str], flag: str) -> str:
    for i, arg in enumerate(command):
        if arg == flag:
            return command[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {command}")


# --- schema validation -----------------------------------------------------------------------

def crd_schema(kind: str) -> tuple[str, dict[str, Any]]:
    """(apiVersion, openAPIV3Schema) of the served, stored version of the CRD of ``kind``."""
    (crd,) = [d for d in yaml.safe_load_all((K8S / "crds" / CRD_FILES[kind]).read_text()) if d]
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v.get("storage")]
    return f"{crd['spec']['group']}/{version['name']}", version["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden where the API server would silently prune them
    (an object with ``properties`` and no additionalProperties / preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k not in ("properties",) else {p: strict(s) for p, s in v.items()}
           for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


_CRD_VALIDATORS: dict[str, tuple[str, jsonschema.protocols.Validator]] = {}


def crd_validator(kind: str) -> tuple[str, jsonschema.protocols.Validator]:
    if kind not in _CRD_VALIDATORS:
        api_version, schema = crd_schema(kind)
        schema = strict(schema)
        # metadata is checked by the API server, not by the CRD schema.
        schema["properties"]["metadata"] = {"type": "object"}
        _CRD_VALIDATORS[kind] = (api_version, jsonschema.Draft7Validator(schema))
    return _CRD_VALIDATORS[kind]


def crd_errors(doc: dict[str, Any]) -> list[str]:
    api_version, validator = crd_validator(doc["kind"])
    errors = [f"apiVersion {doc['apiVersion']} is not the CRD's {api_version}"] \
        if doc["apiVersion"] != api_version else []
    errors += [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
               for e in validator.iter_errors(doc)]
    return errors


def test_every_overlay_renders_the_whole_pipeline(docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [("StatefulSet", "txn-worker"), ("Deployment", "txn-sink"),
                     ("Deployment", "txn-api"), ("Deployment", "txn-dashboard"),
                     ("CronJob", "txn-dbt"), ("CronJob", "txn-prune"),
                     ("HorizontalPodAutoscaler", "txn-api"),
                     ("PodDisruptionBudget", "txn-worker"), ("Kafka", "txn-kafka"),
                     ("MongoDBCommunity", "txn-mongodb")]:
        assert expected in kinds
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    (ns,) = of_kind(docs, "Namespace")
    assert namespaces == {ns["metadata"]["name"]}


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(
        docs: list[dict[str, Any]], k8s_version: str) -> None:
    checked = 0
    for doc in docs:
        if doc["kind"] in CRD_FILES:
            continue
        assert doc["apiVersion"] in BUILTIN_APIS, f"{doc['kind']}: {doc['apiVersion']}"
        kubernetes_validate.validate(doc, k8s_version, strict=True)
        checked += 1
    assert checked >= 15


def test_custom_resources_validate_against_their_crds(docs: list[dict[str, Any]]) -> None:
    seen = set()
    for doc in docs:
        if doc["kind"] in CRD_FILES:
            assert crd_errors(doc) == [], doc["metadata"]["name"]
            seen.add(doc["kind"])
    assert seen == set(CRD_FILES)


def test_the_validators_reject_broken_objects(kustomize: str) -> None:
    """The schema checks above can fail: a typo, a wrong type, a missing field are caught."""
    docs = render(kustomize, "dev")
    topic = of_kind(docs, "KafkaTopic")[0]
    topic["spec"]["partitions"] = "eight"
    assert any("partitions" in e for e in crd_errors(topic))
    pool = of_kind(docs, "KafkaNodePool")[0]
    pool["spec"]["replica"] = pool["spec"].pop("replicas")  # a typo the server would prune
    assert any("replica" in e for e in crd_errors(pool))
    kafka = one(docs, "Kafka", "txn-kafka")
    del kafka["spec"]["kafka"]["listeners"]
    assert any("listeners" in e for e in crd_errors(kafka))
    sts = one(docs, "StatefulSet", "txn-worker")
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "6066"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_VERSIONS[-1], strict=True)
    hpa = one(docs, "HorizontalPodAutoscaler", "txn-api")
    hpa["spec"]["minReplica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSIONS[-1], strict=True)


# --- secrets ---------------------------------------------------------------------------------

def secret_template() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()) if d]
    return doc


def test_the_secret_is_a_template_and_not_rendered(docs: list[dict[str, Any]]) -> None:
    template = secret_template()
    kubernetes_validate.validate(template, K8S_VERSIONS[-1], strict=True)
    assert of_kind(docs, "Secret") == []
    name = template["metadata"]["name"]
    keys = set(template["stringData"])
    referenced = set()
    for _, c in containers(docs):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == name
                assert e["name"] == ref["key"], "a secret key is named like its variable"
                referenced.add(ref["key"])
        assert not any("secretRef" in src for src in c.get("envFrom", []))
    for _, template in pods(docs):
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == name
                referenced |= {item["key"] for item in volume["secret"]["items"]}
    for mdb in of_kind(docs, "MongoDBCommunity"):
        for user in mdb["spec"]["users"]:
            assert user["passwordSecretRef"]["name"] == name
            referenced.add(user["passwordSecretRef"]["key"])
    assert referenced == keys
    assert {"MONGO_URL", "API_KEY", "PANEL_COOKIE_SECRET", "dashboard-users.json"} <= referenced


def test_the_api_and_the_dashboard_need_their_secrets(docs: list[dict[str, Any]]) -> None:
    """An API or dashboard pod whose Secret or key is missing does not start (explicit
    ``optional: false``): the API never runs without API_KEY (a non-empty key makes it require
    X-API-Key), the dashboard never without its logins; the template shows every key a value."""
    for name in ("txn-api", "txn-dashboard"):
        template = pod_spec(one(docs, "Deployment", name))
        (c,) = template["spec"]["containers"]
        assert env_of(c)["API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "API_KEY", name
        for e in c["env"]:
            for kind in ("secretKeyRef", "configMapKeyRef"):
                ref = e.get("valueFrom", {}).get(kind)
                if ref:
                    assert ref.get("optional") is False, f"{name}: {e}"
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"].get("optional") is False, name
    values = secret_template()["stringData"]
    assert all(values.values())
    assert load({"API_KEY": values["API_KEY"]}).api_key  # the API then asks for the key


def test_the_dashboard_asks_for_a_login_and_checks_the_websocket_origin(
        docs: list[dict[str, Any]], overlay: str) -> None:
    dash = one(docs, "Deployment", "txn-dashboard")
    spec = pod_spec(dash)["spec"]
    (c,) = spec["containers"]
    command, env = c["command"], env_of(c)
    assert not any("*" in arg for arg in command)
    # The websocket origin: a value of the ConfigMap txn-dashboard, expanded by Kubernetes.
    assert arg_after(command, "--allow-websocket-origin") == "$(DASHBOARD_ORIGIN)"
    ref = env["DASHBOARD_ORIGIN"]["valueFrom"]["configMapKeyRef"]
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == ref["name"]]
    assert cm["metadata"]["name"].startswith("txn-dashboard-")  # generated: rolls the pods
    origin = cm["data"][ref["key"]]
    assert re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?", origin), origin
    assert (origin == "localhost:5006") == (overlay == "dev")  # port-forward; prod: its host
    # Basic auth: Panel's --basic-auth reads the users from a file of the Secret's volume.
    users = Path(arg_after(command, "--basic-auth"))
    (mount,) = [m for m in c["volumeMounts"] if users.parent == Path(m["mountPath"])]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == users.name]
    template = secret_template()
    assert volume["secret"]["secretName"] == template["metadata"]["name"]
    logins = json.loads(template["stringData"][item["key"]])
    assert logins and all(isinstance(v, str) and v for v in logins.values())
    # The file is readable by the pod's user (its group) and no one else.
    assert volume["secret"]["defaultMode"] == 0o440
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
    # The login cookie is signed with a key every replica shares; Panel reads the variable.
    assert "--cookie-secret" not in " ".join(command)  # the variable only: never both
    assert env["PANEL_COOKIE_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "PANEL_COOKIE_SECRET"
    # The probes use Panel's /liveness, which needs no login.
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/liveness"
    assert "--liveness" in command


def test_the_api_rate_limit_allows_the_dashboards(docs: list[dict[str, Any]]) -> None:
    """Every dashboard pod is one client of the API (about 5 requests a second per open
    page): the ConfigMap's API_RATE_LIMIT leaves room for dozens of pages per pod."""
    limit = load(config(docs)).api_rate_limit
    assert limit == 0 or limit >= 100


def test_no_real_secret_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "k8s"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    for path in tracked or [str(p.relative_to(ROOT)) for p in K8S.rglob("*.yaml")]:
        if (path.startswith("k8s/crds/") or path == "k8s/secret.example.yaml"
                or not path.endswith((".yaml", ".yml"))):
            continue
        for doc in yaml.safe_load_all((ROOT / path).read_text()):
            assert not (doc and doc.get("kind") == "Secret"), path


# --- cross-checks with the code ---------------------------------------------------------------

def test_the_configmap_holds_only_valid_settings(docs: list[dict[str, Any]]) -> None:
    data = config(docs)
    assert set(data) <= set(ENV_VARS)
    loaded = load(data)  # raises SettingsError naming the variable if a value is invalid
    assert loaded.topic_partitions == int(data["TOPIC_PARTITIONS"])


def test_every_container_variable_is_a_setting(docs: list[dict[str, Any]]) -> None:
    data = config(docs)
    cm_name = next(d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")
                   if d["metadata"]["name"].startswith("txn-config"))
    for workload, c in containers(docs):
        names = set(env_of(c))
        for src in c.get("envFrom", []):
            assert src["configMapRef"]["name"] == cm_name
            names |= set(data)
        unknown = names - set(ENV_VARS) - NON_SETTINGS_ENV
        assert not unknown, f"{workload['metadata']['name']}/{c['name']}: {sorted(unknown)}"
        # What a container gets must be valid for the settings module (secrets aside).
        env = {**data, **{k: e["value"] for k, e in env_of(c).items() if "value" in e}}
        load({k: v for k, v in env.items() if k in ENV_VARS})


def test_one_image_runs_every_part(docs: list[dict[str, Any]]) -> None:
    images = {c["image"] for _, c in containers(docs)}
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"txn-analytics:[\w.-]+", image)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert 'pip install ".[api,dashboard,dbt]"' in dockerfile
    commands = {c["command"][0] for _, c in containers(docs)}
    assert commands == {"txn", "uvicorn", "panel", "dbt"}


def test_every_container_has_requests_and_limits(docs: list[dict[str, Any]]) -> None:
    for workload, c in containers(docs):
        res = c["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]), workload["metadata"]["name"]
        assert "memory" in res["limits"], workload["metadata"]["name"]
    for _, template in pods(docs):
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_every_service_selects_pods_that_exist(docs: list[dict[str, Any]]) -> None:
    templates = list(pods(docs))
    for svc in of_kind(docs, "Service"):
        selector = svc["spec"]["selector"]
        matched = [t for _, t in templates if selects(selector, t["metadata"]["labels"])]
        assert matched, f"Service {svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for t in matched:
                ports = [p for c in t["spec"]["containers"] for p in c.get("ports", [])]
                assert any(target in (p.get("name"), p["containerPort"]) for p in ports), \
                    f"Service {svc['metadata']['name']} targets {target}, not exposed"
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        assert any(selects(pdb["spec"]["selector"], t["metadata"]["labels"])
                   for _, t in templates)
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        one(docs, ref["kind"], ref["name"])


def service_port(docs: list[dict[str, Any]], name: str) -> int:
    (port,) = one(docs, "Service", name)["spec"]["ports"]
    return port["port"]


def container_port(workload: dict[str, Any]) -> int:
    (c,) = pod_spec(workload)["spec"]["containers"]
    (port,) = c["ports"]
    return port["containerPort"]


def test_ports_agree_with_the_settings(docs: list[dict[str, Any]]) -> None:
    data = config(docs)
    # The worker: WEB_PORT of the ConfigMap = the settings' default = container = Services.
    worker = one(docs, "StatefulSet", "txn-worker")
    assert int(data["WEB_PORT"]) == DEFAULTS.web_port == 6066 == container_port(worker)
    assert service_port(docs, "txn-worker") == service_port(docs, "txn-worker-headless") == 6066
    host, port = url_port(data["WORKER_URL"])
    assert (host, port) == ("txn-worker", service_port(docs, "txn-worker"))
    assert port == url_port(DEFAULTS.worker_url)[1]
    # The API: uvicorn --port = container = Service = API_URL = the settings' default.
    api = one(docs, "Deployment", "txn-api")
    (c,) = pod_spec(api)["spec"]["containers"]
    assert c["command"][:2] == ["uvicorn", "views.api:app"]
    assert int(arg_after(c["command"], "--port")) == container_port(api) == 8000
    host, port = url_port(data["API_URL"])
    assert (host, port) == ("txn-api", service_port(docs, "txn-api"))
    assert port == url_port(DEFAULTS.api_url)[1] == 8000
    # The dashboard: panel serve --port = container = Service = 5006.
    dash = one(docs, "Deployment", "txn-dashboard")
    (c,) = pod_spec(dash)["spec"]["containers"]
    assert c["command"][:3] == ["panel", "serve", "dashboards/live.py"]
    assert int(arg_after(c["command"], "--port")) == container_port(dash) == 5006
    assert service_port(docs, "txn-dashboard") == 5006
    # The sink: its metrics and probes on SINK_METRICS_PORT (the settings' default, or the
    # ConfigMap's), not a Service: only the kubelet's probes reach it.
    sink = one(docs, "Deployment", "txn-sink")
    assert int(data.get("SINK_METRICS_PORT", DEFAULTS.sink_metrics_port)) == \
        container_port(sink) == 6067


def test_every_pod_that_serves_http_binds_all_interfaces(docs: list[dict[str, Any]]) -> None:
    """BIND_HOST is 127.0.0.1 by default (app/settings.py), unreachable from outside a pod: every
    container with a port gets BIND_HOST=0.0.0.0, which the Faust worker reads itself and the
    API's and the dashboard's commands take as $(BIND_HOST) (expanded by Kubernetes from the
    container's variables, so it must be one of them)."""
    assert DEFAULTS.bind_host == "127.0.0.1"
    data = config(docs)
    serving = set()
    for workload, c in containers(docs):
        if not c.get("ports"):
            continue
        name = workload["metadata"]["name"]
        serving.add(name)
        env = {**(data if c.get("envFrom") else {}),
               **{k: e.get("value") for k, e in env_of(c).items()}}
        assert env.get("BIND_HOST") == "0.0.0.0", name
        assert load({"BIND_HOST": env["BIND_HOST"]}).bind_host == "0.0.0.0"
        command = c["command"]
        flag = {"uvicorn": "--host", "panel": "--address"}.get(command[0])
        if flag:
            assert arg_after(command, flag) == "$(BIND_HOST)", name
        else:
            # app/main.py: web_bind=BIND_HOST; the sink's metrics server: host=BIND_HOST
            assert command[:2] in (["txn", "worker"], ["txn", "sink"]), name
    assert serving == {"txn-worker", "txn-api", "txn-dashboard", "txn-sink"}


def test_every_deployment_and_statefulset_has_probes(docs: list[dict[str, Any]]) -> None:
    """Every long-running pod is probed: readiness and liveness, on a port it declares (by
    name), with an HTTP path or a TCP check. The sink's: /ready and /health on its metrics
    port (agents/sink/metrics.py)."""
    for workload, template in pods(docs):
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in template["spec"]["containers"]:
            name = f"{workload['metadata']['name']}/{c['name']}"
            ports = {p["name"] for p in c.get("ports", [])}
            for kind in ("readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                assert probe, f"{name} has no {kind}"
                check = probe.get("httpGet") or probe.get("tcpSocket")
                assert check and check["port"] in ports, f"{name} {kind}: {probe}"
                assert "httpGet" not in probe or probe["httpGet"]["path"].startswith("/")
    (c,) = pod_spec(one(docs, "Deployment", "txn-sink"))["spec"]["containers"]
    assert (c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]) == \
        ("/ready", "/health")
    assert c["readinessProbe"]["httpGet"]["port"] == c["ports"][0]["name"] == "metrics"


def test_the_worker_web_host_is_its_stable_dns_name(docs: list[dict[str, Any]]) -> None:
    sts = one(docs, "StatefulSet", "txn-worker")
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    template = pod_spec(sts)
    assert selects(headless["spec"]["selector"], template["metadata"]["labels"])
    (c,) = template["spec"]["containers"]
    assert c["command"] == ["txn", "worker", "-l", "info"]
    env = c["env"]
    names = [e["name"] for e in env]
    assert env[names.index("POD_NAME")]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env[names.index("POD_NAMESPACE")]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.namespace"
    web_host = env[names.index("WEB_HOST")]["value"]
    svc = headless["metadata"]["name"]
    assert web_host == f"$(POD_NAME).{svc}.$(POD_NAMESPACE).svc.cluster.local"
    # Kubernetes expands $(VAR) only from variables defined before it.
    assert names.index("POD_NAME") < names.index("WEB_HOST") > names.index("POD_NAMESPACE")
    # Every pod's name, expanded, is a valid DNS name that settings.load accepts.
    namespace = sts["metadata"]["namespace"]
    for ordinal in range(sts["spec"]["replicas"]):
        host = web_host.replace("$(POD_NAME)", f"{sts['metadata']['name']}-{ordinal}") \
                       .replace("$(POD_NAMESPACE)", namespace)
        assert len(host) <= 253
        assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label)
                   for label in host.split("."))
        assert load({"WEB_HOST": host}).web_host == host


def test_the_worker_keeps_rocksdb_on_its_own_volume(docs: list[dict[str, Any]]) -> None:
    sts = one(docs, "StatefulSet", "txn-worker")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (c,) = pod_spec(sts)["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env_of(c)["DATA_DIR"]["value"] == mounts[claim["metadata"]["name"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    spec = pod_spec(sts)["spec"]
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsUser"]
    # Graceful termination long enough to commit, flush RocksDB and leave the group cleanly.
    assert spec["terminationGracePeriodSeconds"] >= 60
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "web"
        assert c[probe]["httpGet"]["path"].rstrip("/") == "/health"
    pdb = one(docs, "PodDisruptionBudget", "txn-worker")
    assert selects(pdb["spec"]["selector"], pod_spec(sts)["metadata"]["labels"])
    assert pdb["spec"]["maxUnavailable"] == 1


def test_topics_match_the_contract_and_the_partitions(docs: list[dict[str, Any]]) -> None:
    data = config(docs)
    prefix = data.get("TOPIC_PREFIX", "")
    topics = of_kind(docs, "KafkaTopic")
    names = sorted(t["spec"].get("topicName", t["metadata"]["name"]) for t in topics)
    assert names == sorted(prefix + t for t in contract.TOPICS)
    kafka = one(docs, "Kafka", "txn-kafka")
    brokers = sum(p["spec"]["replicas"] for p in of_kind(docs, "KafkaNodePool")
                  if "broker" in p["spec"]["roles"])
    for t in topics:
        assert t["spec"]["partitions"] == int(data["TOPIC_PARTITIONS"])
        # The topics Faust creates itself (changelogs) get as many replicas as these.
        assert t["spec"]["replicas"] == int(data["TOPIC_REPLICATION_FACTOR"])
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert int(t["spec"]["config"]["retention.ms"]) >= 24 * 3600 * 1000
        assert 1 <= t["spec"]["replicas"] <= brokers
        min_isr = int(t["spec"]["config"].get("min.insync.replicas", 1))
        assert min_isr < t["spec"]["replicas"] or t["spec"]["replicas"] == 1


def test_kafka_runs_in_kraft_mode_and_the_bootstrap_matches(docs: list[dict[str, Any]]) -> None:
    kafka = one(docs, "Kafka", "txn-kafka")
    assert "zookeeper" not in kafka["spec"]
    pools = [p for p in of_kind(docs, "KafkaNodePool")
             if p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]]
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    (plain,) = [lst for lst in kafka["spec"]["kafka"]["listeners"] if not lst["tls"]]
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:{plain['port']}"
    assert config(docs)["KAFKA_BOOTSTRAP_SERVERS"] == bootstrap
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    rf = int(kafka["spec"]["kafka"]["config"]["default.replication.factor"])
    assert rf <= brokers
    assert int(kafka["spec"]["kafka"]["config"]["offsets.topic.replication.factor"]) <= brokers


def test_mongodb_user_and_urls_agree(docs: list[dict[str, Any]]) -> None:
    data = config(docs)
    (mdb,) = of_kind(docs, "MongoDBCommunity")
    assert mdb["spec"]["type"] == "ReplicaSet"
    (user,) = mdb["spec"]["users"]
    assert {r["db"] for r in user["roles"]} == {data["MONGO_DB"]}
    url = secret_template()["stringData"]["MONGO_URL"]
    assert load({"MONGO_URL": url}).mongo_url == url
    parts = urlsplit(url)
    assert parts.username == user["name"]
    assert f"replicaSet={mdb['metadata']['name']}" in parts.query
    assert f"authSource={user['db']}" in parts.query
    assert f".{mdb['metadata']['name']}-svc." in parts.netloc


def test_network_policies_let_only_the_right_parts_talk(docs: list[dict[str, Any]]) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(docs, "NetworkPolicy")}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    (mdb,) = of_kind(docs, "MongoDBCommunity")
    # The operator's MongoDB pods carry app=<name>-svc; every other policy selects our pods.
    mongo_labels = {"app": f"{mdb['metadata']['name']}-svc"}
    templates = {w["metadata"]["name"]: t["metadata"]["labels"] for w, t in pods(docs)}
    for name, spec in policies.items():
        if name == "default-deny-ingress":
            continue
        targets = [n for n, labels in templates.items() if selects(spec["podSelector"], labels)]
        assert targets or selects(spec["podSelector"], mongo_labels), name

    def allowed(policy: str, source: dict[str, str]) -> bool:
        rules = policies[policy]["ingress"]
        return any("from" not in r or any(selects(peer["podSelector"], source)
                                          for peer in r["from"]) for r in rules)

    # Who uses MongoDB (gets MONGO_URL) is exactly who may reach it.
    for workload, c in containers(docs):
        labels = templates[workload["metadata"]["name"]]
        assert allowed("txn-mongodb", labels) == ("MONGO_URL" in env_of(c)), \
            workload["metadata"]["name"]
    assert allowed("txn-mongodb", mongo_labels)  # replication between members
    # The worker's web port: the API (WORKER_URL) and other workers (table_route), no one else.
    assert {n for n, lb in templates.items() if allowed("txn-worker", lb)} == \
        {"txn-api", "txn-worker"}
    assert {n for n, lb in templates.items() if allowed("txn-api", lb)} == {"txn-dashboard"}
    assert allowed("txn-dashboard", {})  # the user interface: anyone
    # Kafka: Strimzi's listener policy admits the labelled clients: the two workers.
    kafka = one(docs, "Kafka", "txn-kafka")
    (plain,) = [lst for lst in kafka["spec"]["kafka"]["listeners"] if not lst["tls"]]
    clients = {n for n, lb in templates.items()
               if any(selects(peer["podSelector"], lb) for peer in plain["networkPolicyPeers"])}
    assert clients == {"txn-worker", "txn-sink"}


def test_replicas_per_overlay(docs: list[dict[str, Any]], overlay: str) -> None:
    partitions = int(config(docs)["TOPIC_PARTITIONS"])
    sts = one(docs, "StatefulSet", "txn-worker")
    sink = one(docs, "Deployment", "txn-sink")
    hpa = one(docs, "HorizontalPodAutoscaler", "txn-api")
    assert "replicas" not in one(docs, "Deployment", "txn-api")["spec"]  # the HPA owns it
    # More consumers than partitions would sit idle.
    assert sts["spec"]["replicas"] <= partitions and sink["spec"]["replicas"] <= partitions
    counts = [sts["spec"]["replicas"], sink["spec"]["replicas"], hpa["spec"]["minReplicas"],
              one(docs, "Deployment", "txn-dashboard")["spec"]["replicas"]]
    if overlay == "dev":
        assert counts == [1, 1, 1, 1]
        assert one(docs, "MongoDBCommunity", "txn-mongodb")["spec"]["members"] == 1
    else:
        assert min(counts) >= 2
        assert one(docs, "MongoDBCommunity", "txn-mongodb")["spec"]["members"] == 3
        assert partitions % sts["spec"]["replicas"] == 0  # an even share per worker


def test_the_image_holds_what_the_commands_need(docs: list[dict[str, Any]]) -> None:
    """The Dockerfile copies every package setup.cfg installs plus the dbt project, and every
    command of the manifests finds its module, file or project in it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+)/ \1/$", dockerfile, re.M))
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    packages = {p for p in cfg["options.packages.find"]["include"].split() if "." not in p}
    assert packages | {"dbt"} == copied
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    needed = copied | {"setup.cfg", "pyproject.toml", "README.md"}
    assert not needed & ignored
    assert re.search(r"^WORKDIR /app$", dockerfile, re.M)
    for _, c in containers(docs):
        cwd = Path(c.get("workingDir", "/app")).relative_to("/app")
        command = c["command"]
        if command[0] == "uvicorn":
            module, _, attr = command[1].partition(":")
            source = (ROOT / cwd / module.replace(".", "/")).with_suffix(".py").read_text()
            assert re.search(rf"^{attr}\b.*=", source, re.M)
        elif command[:2] == ["panel", "serve"]:
            assert (ROOT / cwd / command[2]).is_file()
        elif command[0] == "dbt":
            project = ROOT / cwd / command[command.index("--profiles-dir") + 1]
            assert (project / "dbt_project.yml").is_file() and (project / "profiles.yml").is_file()
        else:
            assert command[0] == "txn" and command[1] in ("worker", "sink", "prune"), command
            assert cfg["options.entry_points"]["console_scripts"].split() == \
                ["txn", "=", "app.cli:main"]
    sink_command = (ROOT / "agents" / "sink" / "command.py").read_text()
    assert re.search(r"^class sink\(worker\)", sink_command, re.M)
