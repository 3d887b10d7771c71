"""deploy/kubernetes, rendered as `make k8s` renders it (tools/render_k8s.py), checked offline:
every object against the Kubernetes schemas (kubernetes-validate, strict) or, for KEDA's, the
CRD shipped in deploy/kubernetes/crds; and against the code: the probes ask the ports and
health service names the services really serve, every variable a container gets is one its
code reads, the commands are the image's, every Secret referenced is documented.

Each check is a function returning its findings; beside each "no findings" test, a test
breaks a copy of the manifests the way the check exists to catch and expects a finding."""

from __future__ import annotations

import copy
import functools
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from backoffice.config import BackofficeSettings
from paymesh.platform.config import ServiceSettings
from paymesh_ops import cli
from paymesh_ops.services import ALL, BACKOFFICE, CLIENTS, SCHEMAS
from rebill_svc.config import RebillSettings
from rebill_svc.topology import DEAD_QUEUE, JOB_QUEUES
from tests.support.kubernetes import (
    KUBERNETES,
    OVERLAYS,
    ROOT,
    container_env,
    containers,
    crd_schemas,
    environ_reads,
    everything,
    find,
    image_name,
    pod_spec,
    render_tool,
    rendered,
    settings_variables,
    validate_builtin,
    validate_custom,
)

APP_IMAGE = "paymesh"
WORKER_MODULE = "rebill_svc.worker"
BACKOFFICE_MODULE = "backoffice"
PACKAGES = {definition.package: definition for definition in ALL.values()}
# The vault's gRPC port admits these callers only: Envoy (REST /v1/payment_methods), the
# gateway (card tokens for charges) and rebill (rebill_svc.service's vault channel checks a
# subscription's payment method); and the back office, for the gRPC health its System page
# shows (the vault's RPCs refuse its identity).
VAULT_CALLERS = {"envoy", "gateway", "rebill", BACKOFFICE}
SECRET_DOC = KUBERNETES / "README.md"
# Development tools beside the services (dev overlay): one pod, no spread, no budget.
DEV_TOOLS = {"sandbox-psp"}

Objects = list[dict]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def objects(overlay: str) -> Objects:
    return everything(overlay)


def broken(objects: Objects, kind: str, name: str, change: Callable[[dict], object]) -> Objects:
    """A copy of `objects` with `change` applied to one of them."""
    copied = copy.deepcopy(objects)
    change(find(copied, kind, name))
    return copied


def app_containers(objects: Objects) -> list[tuple[dict, dict]]:
    """(object, container) of every container that runs the paymesh image."""
    return [
        (obj, container)
        for obj in objects
        for container in containers(obj)
        if image_name(container) == APP_IMAGE
    ]


def module_of(container: dict) -> str | None:
    command = container["command"]
    if command[:2] == ["python", "-m"]:
        return str(command[2])
    return None


def settings_of(container: dict) -> type[ServiceSettings | BackofficeSettings] | None:
    module = module_of(container)
    if module == WORKER_MODULE:
        return RebillSettings
    if module == BACKOFFICE_MODULE:
        return BackofficeSettings
    if module in PACKAGES:
        return PACKAGES[module].settings_class
    return None


# --- Schemas -----------------------------------------------------------------------------


def schema_problems(objects: Objects) -> list[str]:
    problems = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            if (obj["apiVersion"], obj["kind"]) in crd_schemas():
                validate_custom(obj)
            else:
                validate_builtin(obj)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{where}: no schema (a kind nobody checks)")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            problems.append(f"{where}: {str(error).splitlines()[0]}")
    return problems


def test_every_object_passes_its_schema(objects: Objects) -> None:
    assert schema_problems(objects) == []


def test_a_misspelt_field_fails_the_strict_schemas(objects: Objects) -> None:
    def misspell(deployment: dict) -> None:
        deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}

    def misspell_keda(scaled: dict) -> None:
        scaled["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's minReplicaCount

    deployment = find(broken(objects, "Deployment", "gateway", misspell), "Deployment", "gateway")
    assert schema_problems([deployment])
    scaled = broken(objects, "ScaledObject", "rebill-worker", misspell_keda)
    assert schema_problems([find(scaled, "ScaledObject", "rebill-worker")])


def test_the_shipped_crds_are_keda_s() -> None:
    for path in sorted((KUBERNETES / "crds").glob("*.yaml")):
        crd = render_tool().load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition"
        assert crd["spec"]["group"] == "keda.sh"
        assert "github.com/kedacore/keda release v2." in path.read_text().splitlines()[0]


# --- Probes: ports the containers declare, names the code registers ------------------------


def probe_problems(objects: Objects) -> list[str]:
    problems = []
    for obj, container in app_containers(objects):
        if obj["kind"] != "Deployment" or container not in pod_spec(obj)["containers"]:
            continue  # init containers run to completion: no probes
        where = f"{obj['metadata']['name']}/{container['name']}"
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        settings = settings_of(container)
        module = module_of(container)
        if settings is None or module is None:
            problems.append(f"{where}: runs {container['command']}, no service of ours")
            continue
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind not in container:
                problems.append(f"{where}: no {kind}")
        fields = settings.model_fields
        if module == BACKOFFICE_MODULE:  # a web app: /healthz on its one port for all three
            ops_port = fields["port"].default
            ready = container.get("readinessProbe", {}).get("httpGet", {})
            if ready.get("path") != "/healthz" or _port(ready.get("port"), ports) != ops_port:
                problems.append(f"{where}: readiness is not /healthz on {ops_port}")
        elif module == WORKER_MODULE:
            ops_port = fields["worker_http_port"].default
            ready = container.get("readinessProbe", {}).get("httpGet", {})
            if ready.get("path") != "/readyz" or _port(ready.get("port"), ports) != ops_port:
                problems.append(f"{where}: readiness is not /readyz on {ops_port}")
        else:
            ops_port = fields["http_port"].default
            grpc_port = fields["grpc_port"].default
            grpc = container.get("readinessProbe", {}).get("grpc")
            if grpc is None:
                problems.append(f"{where}: readiness is not a gRPC health check")
            else:
                if grpc["port"] not in ports.values() or grpc["port"] != grpc_port:
                    problems.append(f"{where}: gRPC probe on {grpc['port']}, serves {grpc_port}")
                registered = PACKAGES[module].grpc_services
                if grpc.get("service") not in registered:
                    problems.append(f"{where}: health name {grpc.get('service')!r} unregistered")
        live = container.get("livenessProbe", {}).get("httpGet", {})
        if live.get("path") != "/healthz" or _port(live.get("port"), ports) != ops_port:
            problems.append(f"{where}: liveness is not /healthz on the ops port {ops_port}")
        start = container.get("startupProbe", {})
        for probe in (start.get("httpGet"), start.get("grpc")):
            if probe and _port(probe["port"], ports) not in ports.values():
                problems.append(f"{where}: startup probe on an undeclared port")
    return problems


def _port(port: object, declared: dict[str, int]) -> object:
    return declared.get(port, port) if isinstance(port, str) else port


def test_probes_ask_the_ports_and_health_names_the_services_serve(objects: Objects) -> None:
    assert probe_problems(objects) == []


def test_a_probe_on_a_wrong_health_name_or_port_is_found(objects: Objects) -> None:
    def wrong_name(deployment: dict) -> None:
        probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        probe["grpc"]["service"] = "paymesh.gateway.v1.Gateway"

    def wrong_port(deployment: dict) -> None:
        probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        probe["grpc"]["port"] = 50051  # the gateway's

    assert probe_problems(broken(objects, "Deployment", "gateway", wrong_name))
    assert probe_problems(broken(objects, "Deployment", "vault", wrong_port))


def test_each_service_runs_as_its_own_deployment(objects: Objects) -> None:
    modules = {
        module_of(c)
        for obj, c in app_containers(objects)
        if obj["kind"] == "Deployment" and c in pod_spec(obj)["containers"]
    }
    assert modules == {*PACKAGES, WORKER_MODULE, BACKOFFICE_MODULE}


# --- Environment: only what the code reads ------------------------------------------------


@functools.cache
def read_anywhere() -> set[str]:
    """Variables read with os.environ in the shipped code (src/, less the generated stubs)."""
    return environ_reads(*(p for p in sorted((ROOT / "src").rglob("*.py")) if "_pb2" not in p.name))


def env_problems(objects: Objects) -> list[str]:
    problems = []
    environ = read_anywhere()
    every_class = {d.settings_class for d in ALL.values()}
    for obj, container in app_containers(objects):
        settings = settings_of(container)
        if settings is not None:
            known = settings_variables(settings) | environ
        elif container["command"][0] == "paymesh":  # the CLI: any service's settings
            known = set().union(*(settings_variables(c) for c in every_class)) | environ
        else:
            problems.append(f"{obj['metadata']['name']}: unknown command {container['command']}")
            continue
        for name in container_env(container, objects):
            if name not in known:
                problems.append(f"{obj['metadata']['name']}/{container['name']}: {name} unread")
    return problems


def test_every_variable_a_container_gets_is_read_by_its_code(objects: Objects) -> None:
    assert env_problems(objects) == []


def test_a_variable_the_code_does_not_read_is_found(objects: Objects) -> None:
    def misspell(deployment: dict) -> None:
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        env.append({"name": "REBILL_WORKER_PREFETCH", "value": "8"})  # the worker's, not here

    assert env_problems(broken(objects, "Deployment", "gateway", misspell))


def test_the_sandbox_psp_gets_only_variables_it_reads() -> None:
    objects = everything("dev")
    reads = environ_reads(ROOT / "dev" / "sandbox_psp.py")
    [container] = containers(find(objects, "Deployment", "sandbox-psp"))
    assert set(container_env(container, objects)) <= reads


# --- Secrets: referenced, never written, each documented ----------------------------------

SECRET_LIKE = re.compile(r"(_KEY|_SECRET|_PASSWORD|_TOKEN|^DATABASE_URL|^AMQP_URL|^VAULT_KEYRING)$")


def secret_references(objects: Objects) -> set[tuple[str, str]]:
    """(Secret, key) of every reference: env, volumes, projected volumes, KEDA's auth."""
    found = set()
    for obj in objects:
        for container in containers(obj):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.add((ref["name"], ref["key"]))
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    found.add((source["secretRef"]["name"], "*"))
        spec = pod_spec(obj) or {}
        for volume in spec.get("volumes", []):
            sources = (
                [volume] if "secret" in volume else volume.get("projected", {}).get("sources", [])
            )
            for source in sources:
                if "secret" in source:
                    secret = source["secret"]
                    name = secret.get("secretName") or secret["name"]
                    items = secret.get("items") or [{"key": "*"}]
                    found |= {(name, item["key"]) for item in items}
        if obj["kind"] == "TriggerAuthentication":
            found |= {(r["name"], r["key"]) for r in obj["spec"]["secretTargetRef"]}
    return found


def secret_problems(objects: Objects, documentation: str) -> list[str]:
    problems = [f"Secret {o['metadata']['name']} written" for o in objects if o["kind"] == "Secret"]
    for obj, container in [(o, c) for o in objects for c in containers(o)]:
        for name, entry in container_env(container, objects).items():
            if SECRET_LIKE.search(name) and "valueFrom" not in entry:
                problems.append(f"{obj['metadata']['name']}: {name} written in the manifest")
    rows = {
        (m.group(1), m.group(2))
        for m in re.finditer(r"^\| `([a-z0-9-]+)` \| `([^`]+)` \|", documentation, re.M)
    }
    for name, key in sorted(secret_references(objects)):
        documented = (name, key) in rows or (key.endswith(".key") and (name, "*.key") in rows)
        documented = documented or (key.endswith(".pub") and (name, "*.pub") in rows)
        if not documented:
            problems.append(f"Secret {name}, key {key}: not in {SECRET_DOC.name}")
    return problems


def test_secrets_are_referenced_never_written_and_each_documented(objects: Objects) -> None:
    assert secret_problems(objects, SECRET_DOC.read_text()) == []


def test_a_written_or_undocumented_secret_is_found(objects: Objects) -> None:
    def write(deployment: dict) -> None:
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        [entry] = [e for e in env if e["name"] == "STRIPE_SECRET_KEY"]
        entry.pop("valueFrom")
        entry["value"] = "sk_live_0000"

    def undocumented(deployment: dict) -> None:
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        ref = {"secretKeyRef": {"name": "paymesh-unknown", "key": "url"}}
        env.append({"name": "DATABASE_URL", "valueFrom": ref})

    assert secret_problems(broken(objects, "Deployment", "gateway", write), SECRET_DOC.read_text())
    assert secret_problems(
        broken(objects, "Deployment", "webhook", undocumented), SECRET_DOC.read_text()
    )


def key_problems(objects: Objects) -> list[str]:
    """Each service pod holds its own signing key and every identity's public key (to verify
    the tokens of any caller); the audit key where the service signs audit checkpoints."""
    problems = []
    identities = {*ALL, *CLIENTS}  # the back office calls them too
    for obj, container in app_containers(objects):
        module = module_of(container)
        if obj["kind"] != "Deployment" or module is None:
            continue  # the migration Job and init containers sign nothing
        [volume] = [v for v in pod_spec(obj)["volumes"] if v["name"] == "keys"]
        paths = {
            item["path"]
            for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        where = obj["metadata"]["name"]
        if module == WORKER_MODULE:
            expected = {"rebill.key"}
        elif module == BACKOFFICE_MODULE:  # signs its calls, verifies no one's
            expected = {"backoffice.key"}
        else:
            definition = PACKAGES[module]
            expected = {f"{definition.name}.key", *(f"{i}.pub" for i in identities)}
            service_source = (ROOT / "src" / module / "service.py").read_text()
            if "AuditKeys.load" in service_source:
                expected.add("audit/k1.key")
        if paths != expected:
            problems.append(f"{where}: keys {sorted(paths)}, needs {sorted(expected)}")
    return problems


def test_each_service_gets_its_own_key_and_every_public_key(objects: Objects) -> None:
    assert key_problems(objects) == []


def test_a_missing_public_key_is_found(objects: Objects) -> None:
    def drop_pub(deployment: dict) -> None:
        [volume] = [
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys"
        ]
        volume["projected"]["sources"][0]["secret"]["items"].pop()

    assert key_problems(broken(objects, "Deployment", "rebill", drop_pub))


# --- Image, users, file system, resources, spread ------------------------------------------


def dockerfile_stage(name: str) -> str:
    text = (ROOT / "Dockerfile").read_text()
    start = re.search(rf"^FROM \S+ AS {name}$", text, re.M)
    assert start, name
    end = re.search(r"^FROM ", text[start.end() :], re.M)
    return text[start.end() : start.end() + end.start() if end else None]


def test_commands_are_the_image_s() -> None:
    app = dockerfile_stage("app")
    assert "ENTRYPOINT" not in app and "CMD" not in app  # the manifests' command is all
    uid = int(re.search(r"--uid (\d+)", app).group(1))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for overlay in OVERLAYS:
        objects = everything(overlay)
        for obj, container in app_containers(objects):
            assert pod_spec(obj)["securityContext"]["runAsUser"] == uid
            command = container["command"]
            if command[0] == "paymesh":
                assert "paymesh" in scripts
                with pytest.raises(SystemExit) as done:  # a real subcommand of the CLI
                    cli.main([*command[1:], "--help"])
                assert done.value.code == 0
            else:
                assert module_of(container) in {*PACKAGES, WORKER_MODULE, BACKOFFICE_MODULE}


def test_pods_run_as_non_root_on_a_read_only_root(objects: Objects) -> None:
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, obj["metadata"]["name"]
        for container in containers(obj):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False, container["name"]
            assert security["capabilities"]["drop"] == ["ALL"], container["name"]
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) == {"cpu", "memory"}, container["name"]


def test_deployments_spread_across_zones_and_hosts(objects: Objects) -> None:
    for obj in objects:
        if obj["kind"] != "Deployment" or obj["metadata"]["name"] in DEV_TOOLS:
            continue
        template = obj["spec"]["template"]
        constraints = template["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in constraints:
            selector = constraint["labelSelector"]["matchLabels"]
            assert selector.items() <= template["metadata"]["labels"].items()


def test_every_deployment_has_a_disruption_budget_and_services_match_pods(objects: Objects) -> None:
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    for deployment in deployments:
        if deployment["metadata"]["name"] in DEV_TOOLS:
            continue
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets
        ), deployment["metadata"]["name"]
    for service in (o for o in objects if o["kind"] == "Service"):
        [pods] = [
            d
            for d in deployments
            if service["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        declared = {p["name"] for c in containers(pods) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, (service["metadata"]["name"], port)


# --- Scaling -----------------------------------------------------------------------------


def test_the_workers_scale_on_the_renewal_queues_ready_plus_unacked(objects: Objects) -> None:
    scaled = find(objects, "ScaledObject", "rebill-worker")
    assert find(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    [trigger] = scaled["spec"]["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    assert metadata["mode"] == "QueueLength"
    # Over AMQP KEDA counts ready messages only; the management API counts unacked too.
    assert metadata["protocol"] == "http"
    assert metadata.get("excludeUnacknowledged", "false") == "false"
    assert metadata["useRegex"] == "true" and metadata["operation"] == "sum"
    queues = re.compile(metadata["queueName"])
    assert all(queues.fullmatch(q) for q in JOB_QUEUES)
    assert not queues.fullmatch(DEAD_QUEUE)
    assert find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [worker] = containers(find(objects, "Deployment", "rebill-worker"))
    prefetch = int(container_env(worker, objects)["REBILL_WORKER_PREFETCH"]["value"])
    assert int(metadata["value"]) == 2 * prefetch


def test_the_gateway_scales_on_cpu(objects: Objects) -> None:
    [hpa] = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    [gateway] = containers(find(objects, "Deployment", "gateway"))
    assert "cpu" in gateway["resources"]["requests"]  # utilisation is of the request


# --- Network policies ----------------------------------------------------------------------


def policy_problems(objects: Objects) -> list[str]:
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    problems = []
    if not any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies):
        problems.append("no default deny")
    vault_port = ALL["vault"].settings_class.model_fields["grpc_port"].default
    vault_callers = set()
    for policy in policies:
        spec = policy["spec"]
        selects_envoy = spec["podSelector"].get("matchLabels") == {
            "app.kubernetes.io/name": "envoy"
        }
        for rule in spec.get("ingress", []):
            sources = rule.get("from")
            if (
                not selects_envoy
                and not operator_ingress_rule(spec, rule)
                and (
                    not sources or any("namespaceSelector" in s or "ipBlock" in s for s in sources)
                )
            ):
                problems.append(f"{policy['metadata']['name']}: admits callers from outside")
            if any(p["port"] == vault_port for p in rule.get("ports", [])):
                if not sources:
                    problems.append(f"{policy['metadata']['name']}: vault open to all")
                    continue
                for source in sources:
                    vault_callers.add(
                        source["podSelector"]
                        .get("matchLabels", {})
                        .get("app.kubernetes.io/name", "*")
                    )
    if vault_callers != VAULT_CALLERS:
        problems.append(f"the vault's port admits {sorted(vault_callers)}")
    return problems


def test_only_envoy_is_open_and_the_vault_to_its_callers(objects: Objects) -> None:
    assert policy_problems(objects) == []


def test_an_open_vault_is_found(objects: Objects) -> None:
    def open_to_namespace(policy: dict) -> None:
        policy["spec"]["ingress"][0]["from"].append({"podSelector": {}})

    def open_beyond(policy: dict) -> None:
        policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})

    assert policy_problems(broken(objects, "NetworkPolicy", "vault-grpc", open_to_namespace))
    assert policy_problems(
        broken(objects, "NetworkPolicy", "services-grpc-in-namespace", open_beyond)
    )


# The back office: reached from the operators' ingress (a namespace with this label) or by
# `kubectl port-forward` (the kubelet's, which no NetworkPolicy sees), never from Envoy.
OPERATOR_INGRESS = {"paymesh.dev/operator-ingress": "true"}
BACKOFFICE_PORT = BackofficeSettings.model_fields["port"].default
PROCESSES = {**{name: name for name in ALL}, "rebill_worker": "rebill-worker"}


def operator_ingress_rule(spec: dict, rule: dict) -> bool:
    """A rule that admits the operators' ingress namespace to the back office's port only."""
    return (
        spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": BACKOFFICE}}
        and rule.get("ports") == [{"port": BACKOFFICE_PORT, "protocol": "TCP"}]
        and bool(rule.get("from"))
        and all(s == {"namespaceSelector": {"matchLabels": OPERATOR_INGRESS}} for s in rule["from"])
    )


def matches(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions) against a pod's or namespace's labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if not {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]:
            return False
    return True


def admitted(
    objects: Objects, source: dict, target: str, port: int, namespace: dict | None = None
) -> bool:
    """Whether the NetworkPolicies let a pod labelled `source` (in the namespace when
    `namespace` is None, else in a namespace with those labels) connect to `port` of the
    pods of Deployment `target`."""
    labels = pod_spec_labels(find(objects, "Deployment", target))
    policies = [
        p
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and matches(p["spec"]["podSelector"], labels)
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p["port"] == port for p in ports):
                continue
            peers = rule.get("from")
            if peers is None or any(_peer_matches(p, source, namespace) for p in peers):
                return True
    return False


def _peer_matches(peer: dict, source: dict, namespace: dict | None) -> bool:
    if "ipBlock" in peer:
        return True  # an address range may hold anyone
    if "namespaceSelector" in peer:
        in_namespace = namespace is not None and matches(peer["namespaceSelector"], namespace)
    else:
        in_namespace = namespace is None
    return in_namespace and matches(peer.get("podSelector", {}), source)


def egress_allowed(objects: Objects, name: str, port: int) -> bool:
    """Whether Deployment `name`'s pods may connect to `port` somewhere (any destination)."""
    labels = pod_spec_labels(find(objects, "Deployment", name))
    policies = [
        p
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and "Egress" in p["spec"].get("policyTypes", [])
        and matches(p["spec"]["podSelector"], labels)
    ]
    return not policies or any(
        rule.get("ports") is None or any(p["port"] == port for p in rule["ports"])
        for policy in policies
        for rule in policy["spec"].get("egress", [])
    )


def pod_spec_labels(deployment: dict) -> dict:
    labels: dict = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def backoffice_problems(objects: Objects) -> list[str]:
    """The back office is out of the merchants' reach: Envoy (the merchants' edge) cannot
    connect to it nor route to it, nothing outside reaches it but the operators' ingress, and
    its Service is not exposed. It reaches what it needs: every service's gRPC port and
    every process's /metrics (BACKOFFICE_METRICS_URLS)."""
    problems = []
    envoy = pod_spec_labels(find(objects, "Deployment", "envoy"))
    backoffice = {"app.kubernetes.io/name": BACKOFFICE}
    if admitted(objects, envoy, BACKOFFICE, BACKOFFICE_PORT):
        problems.append("Envoy may connect to the back office")
    if admitted(objects, {"app.kubernetes.io/name": "x"}, BACKOFFICE, BACKOFFICE_PORT):
        problems.append("any pod of the namespace may connect to the back office")
    if admitted(objects, {}, BACKOFFICE, BACKOFFICE_PORT, namespace={}):
        problems.append("any namespace may connect to the back office")
    if not admitted(objects, {}, BACKOFFICE, BACKOFFICE_PORT, namespace=OPERATOR_INGRESS):
        problems.append("the operators' ingress may not connect to the back office")
    envoy_config = find(objects, "ConfigMap", "envoy")["data"]["paymesh.yaml"]
    if BACKOFFICE in envoy_config or str(BACKOFFICE_PORT) in envoy_config:
        problems.append("Envoy's configuration names the back office")
    service = find(objects, "Service", BACKOFFICE)["spec"]
    if service.get("type", "ClusterIP") != "ClusterIP" or service.get("externalIPs"):
        problems.append("the back office's Service is exposed beyond the cluster")
    for port, allowed in ((5432, True), (5672, False), (443, False)):  # PostgreSQL, AMQP, HTTPS
        if egress_allowed(objects, BACKOFFICE, port) != allowed:
            problems.append(f"the back office's egress to port {port}: {not allowed}")
    for name, definition in ALL.items():
        grpc_port = definition.settings_class.model_fields["grpc_port"].default
        if not admitted(objects, backoffice, name, grpc_port):
            problems.append(f"the back office may not call {name} on {grpc_port}")
    [container] = containers(find(objects, "Deployment", BACKOFFICE))
    env = container_env(container, objects)
    urls = BackofficeSettings(metrics_urls=env["BACKOFFICE_METRICS_URLS"]["value"])
    targets = urls.metrics_targets()
    if set(targets) != set(PROCESSES):
        problems.append(f"metrics of {sorted(targets)}, not of {sorted(PROCESSES)}")
    for process, url in targets.items():
        host, _, port = url.removeprefix("http://").partition("/")[0].partition(":")
        deployment = PROCESSES.get(process, process)
        service_ports = [p["port"] for p in find(objects, "Service", host)["spec"]["ports"]]
        if host != deployment or int(port) not in service_ports:
            problems.append(f"{process}: {url} is not its Service's ops port")
        elif not admitted(objects, backoffice, deployment, int(port)):
            problems.append(f"the back office may not read {url}")
    return problems


def test_the_back_office_is_for_operators_only_and_reaches_the_services(
    objects: Objects,
) -> None:
    assert backoffice_problems(objects) == []


def test_a_back_office_open_to_envoy_or_cut_from_the_metrics_is_found(objects: Objects) -> None:
    def open_to_envoy(policy: dict) -> None:
        policy["spec"]["ingress"][0]["from"].append(
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}
        )

    def open_to_all(policy: dict) -> None:
        policy["spec"]["ingress"][0].pop("from")

    def without_the_back_office(policy: dict) -> None:
        policy["spec"]["ingress"][0]["from"] = [
            f
            for f in policy["spec"]["ingress"][0]["from"]
            if f["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") != BACKOFFICE
        ]

    def behind_a_load_balancer(service: dict) -> None:
        service["spec"]["type"] = "LoadBalancer"

    def egress_anywhere(policy: dict) -> None:
        policy["spec"]["egress"].append({})

    assert backoffice_problems(
        broken(objects, "NetworkPolicy", "backoffice-from-operators", open_to_envoy)
    )
    assert backoffice_problems(
        broken(objects, "NetworkPolicy", "backoffice-from-operators", open_to_all)
    )
    assert backoffice_problems(
        broken(objects, "NetworkPolicy", "ops-metrics", without_the_back_office)
    )
    assert backoffice_problems(broken(objects, "Service", BACKOFFICE, behind_a_load_balancer))
    assert backoffice_problems(
        broken(objects, "NetworkPolicy", "backoffice-egress", egress_anywhere)
    )


def test_the_back_office_reads_its_database_url_from_the_secret(
    objects: Objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    [container] = containers(find(objects, "Deployment", BACKOFFICE))
    env = container_env(container, objects)
    database = env["BACKOFFICE_DATABASE_URL"]
    assert database["valueFrom"] == {
        "secretKeyRef": {"name": "paymesh-database", "key": BACKOFFICE}
    }
    assert "DATABASE_URL" not in env  # its own role only, never the owner's
    assert env["BACKOFFICE_COOKIE_SECURE"]["value"] == "true"
    for name, entry in env.items():
        if "value" in entry:
            monkeypatch.setenv(name, entry["value"])
    settings = BackofficeSettings()
    assert settings.cookie_secure is True and settings.host == "0.0.0.0"  # noqa: S104


# --- Envoy and the migration Job -----------------------------------------------------------


def test_envoy_s_config_reaches_every_service_by_its_headless_service(objects: Objects) -> None:
    config_map = find(objects, "ConfigMap", "envoy")
    [volume] = [
        v
        for v in pod_spec(find(objects, "Deployment", "envoy"))["volumes"]
        if v["name"] == "config"
    ]
    assert volume["configMap"]["name"] == "envoy"
    [container] = containers(find(objects, "Deployment", "envoy"))
    [path] = [container["args"][i + 1] for i, a in enumerate(container["args"]) if a == "-c"]
    [item] = volume["configMap"]["items"]
    assert path == f"/etc/envoy/{item['path']}" and item["key"] in config_map["data"]
    config = render_tool().load(config_map["data"][item["key"]])
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert set(clusters) == set(ALL)
    for name, cluster in clusters.items():
        service = find(objects, "Service", name)
        assert service["spec"]["clusterIP"] == "None"
        [address] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        socket = address["endpoint"]["address"]["socket_address"]
        namespace = service["metadata"]["namespace"]
        assert socket["address"] == f"{name}.{namespace}.svc.cluster.local"
        assert socket["port_value"] == ALL[name].settings_class.model_fields["grpc_port"].default
        [check] = cluster["health_checks"]
        assert check["grpc_health_check"]["service_name"] in ALL[name].grpc_services
    # The files the configuration names are the ones the envoy image carries.
    envoy_stage = dockerfile_stage("envoy")
    for image_path in render_tool().ENVOY_FILES.values():
        assert image_path in config_map["data"][item["key"]]
        assert re.search(rf"COPY --from=descriptor \S+ {re.escape(image_path)}$", envoy_stage, re.M)
    assert "build/" not in config_map["data"][item["key"]]
    annotations = find(objects, "Deployment", "envoy")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert render_tool().ENVOY_DIGEST_ANNOTATION in annotations


def test_migrations_run_apart_before_the_rollout(overlay: str) -> None:
    objects, hooks = rendered(overlay)
    assert [h["kind"] for h in hooks] == ["Job"]
    [job] = hooks
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    [container] = containers(job)
    # No names: every schema, and so every runtime role, the back office's among them.
    assert container["command"] == ["paymesh", "migrate"]
    assert BACKOFFICE in SCHEMAS
    assert not [o for o in objects if o["kind"] == "Job"]


# --- The render step itself --------------------------------------------------------------


def test_strategic_merge_merges_lists_by_key_and_deletes() -> None:
    merge = render_tool().strategic_merge
    base = {
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "containers": [
                {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "b", "args": ["1", "2"]},
            ],
        }
    }
    patch = {
        "spec": {
            "strategy": {"type": "Recreate", "rollingUpdate": None},
            "containers": [
                {
                    "name": "a",
                    "env": [{"name": "Y", "$patch": "delete"}, {"name": "Z", "value": "3"}],
                },
                {"name": "b", "args": ["3"]},
            ],
        }
    }
    assert merge(base, patch) == {
        "spec": {
            "replicas": 2,
            "strategy": {"type": "Recreate"},
            "containers": [
                {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Z", "value": "3"}]},
                {"name": "b", "args": ["3"]},  # not merged by key: replaced
            ],
        }
    }
    assert base["spec"]["replicas"] == 2 and "rollingUpdate" in base["spec"]["strategy"]


def test_json_patch_adds_replaces_and_removes() -> None:
    document = {"metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}}
    render_tool().json_patch(
        document,
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}},
            {"op": "add", "path": "/spec/ports/-", "value": {"port": 2}},
            {"op": "replace", "path": "/spec/ports/0/port", "value": 3},
            {"op": "remove", "path": "/metadata/name"},
        ],
    )
    assert document == {
        "metadata": {"annotations": {"a/b": "c"}},
        "spec": {"ports": [{"port": 3}, {"port": 2}]},
    }
    with pytest.raises(render_tool().KustomizeError):
        render_tool().json_patch(document, [{"op": "replace", "path": "/nope", "value": 1}])


def test_images_keep_registry_ports_and_take_tags() -> None:
    tool = render_tool()
    assert (
        tool.image_name("registry:5000/team/paymesh:1.0@sha256:00") == "registry:5000/team/paymesh"
    )
    assert tool.image_name("paymesh") == "paymesh"
    objects = [
        {
            "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "paymesh"}]}}},
        }
    ]
    tool.set_image(objects, {"name": "paymesh", "newName": "r.example/paymesh", "newTag": "2"})
    assert objects[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "r.example/paymesh:2"


def test_an_unsupported_kustomize_field_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(render_tool().KustomizeError, match="commonLabels"):
        render_tool().build(tmp_path)


def test_make_k8s_writes_both_overlays(tmp_path: Path) -> None:
    assert render_tool().main(["--out", str(tmp_path)]) == 0
    for overlay in OVERLAYS:
        documents = render_tool().load_all((tmp_path / f"{overlay}.yaml").read_text())
        assert {d["metadata"]["namespace"] for d in documents} == {
            "paymesh-dev" if overlay == "dev" else "paymesh"
        }
        assert (tmp_path / f"{overlay}-migrate.yaml").read_text().startswith("apiVersion: batch/v1")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^k8s:.*\n\t\$\(PY\) tools/render_k8s\.py", makefile, re.M)


@pytest.mark.tools
def test_envoy_accepts_the_rendered_config(tmp_path: Path) -> None:
    """Envoy itself (`--mode validate`) loads the ConfigMap's configuration, with the image's
    files taken from build/ (make build/paymesh.pb build/openapi.json build/edge.lua)."""
    objects, _ = rendered("production")
    text = find(objects, "ConfigMap", "envoy")["data"]["paymesh.yaml"]
    for build_path, image_path in render_tool().ENVOY_FILES.items():
        assert (ROOT / build_path).exists(), f"make {build_path} first"
        text = text.replace(image_path, str(ROOT / build_path))
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    envoy = Path(sys.executable).parent / "envoy"
    done = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_autoscaled_deployments_leave_their_replica_count_to_the_autoscaler(
    objects: Objects,
) -> None:
    """A `replicas` in the manifest would reset the autoscaler's count on every apply."""
    scaled = [
        o["spec"]["scaleTargetRef"]["name"]
        for o in objects
        if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")
    ]
    assert sorted(scaled) == ["gateway", "rebill-worker"]
    for name in scaled:
        assert "replicas" not in find(objects, "Deployment", name)["spec"], name


def test_pods_get_the_time_to_drain_before_they_are_killed(objects: Objects) -> None:
    """After SIGTERM a service says NOT_SERVING for the drain delay, then lets calls finish
    for the grace period (paymesh.platform.server): the pod's grace must cover both."""
    fields = ServiceSettings.model_fields
    needed = (
        fields["shutdown_drain_delay_seconds"].default + fields["shutdown_grace_seconds"].default
    )
    for obj, container in app_containers(objects):
        if obj["kind"] != "Deployment":
            continue
        env = container_env(container, objects)
        assert "SHUTDOWN_GRACE_SECONDS" not in env and "SHUTDOWN_DRAIN_DELAY_SECONDS" not in env
        grace = pod_spec(obj).get("terminationGracePeriodSeconds", 30)
        assert grace > needed, obj["metadata"]["name"]
