"""docker-compose.yml, the Dockerfile and prometheus/prometheus.yml agree with the code, with
.env.example and with envoy/envoy.yaml. No Docker needed: the files are read, the shell
rewrite of envoy.yaml that the envoy container runs at start is run here with sed, and the
sandbox PSP's healthcheck is run against the sandbox PSP in this process."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from http.server import ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from dev import sandbox_psp
from paymesh.platform.config import ServiceSettings
from paymesh_ops import cli
from rebill_svc.config import RebillSettings

ROOT = Path(__file__).resolve().parents[2]
APP_SERVICES = ("gateway", "vault", "rebill", "webhook")
# The app services, the back office and the one-shot migration: everything that runs the
# paymesh image.
PAYMESH_IMAGE_SERVICES = (*APP_SERVICES, "backoffice", "migrate")
INFRA_SERVICES = (
    "postgres",
    "rabbitmq",
    "jaeger",
    "prometheus",
    "grafana",
    "localstripe",
    "sandbox-psp",
    "envoy",
)
# The PSP base URLs the app services read, and the one compose service that serves each.
PSP_URL_VARIABLES = {"STRIPE_API_BASE": "localstripe", "SANDBOX_API_BASE": "sandbox-psp"}
# The services that charge at or create cards at the sandbox PSP.
SANDBOX_CLIENTS = ("gateway", "vault")
# The only port published beyond the host's loopback: Envoy's public REST port.
PUBLIC_PORTS = {("envoy", 8080)}
# What the migrate service must run before the app services start.
MIGRATE_STEPS = (
    ["paymesh", "migrate"],
    ["paymesh", "keys", "init"],
    ["paymesh", "vault", "init-keyring"],
)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def services() -> dict:
    return compose()["services"]


def paymesh_image_services() -> list[str]:
    """Every service that runs the app image: the app services and migrate."""
    image = services()["migrate"]["image"]
    return [name for name, service in services().items() if service.get("image") == image]


def env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line.split("=", 1)[0].strip())
    return names


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def command_steps(command: str | list[str]) -> list[list[str]]:
    """The commands a service runs: one, or each of an `sh -c 'a && b && c'` chain."""
    words = argv(command)
    if len(words) == 3 and words[0].rsplit("/", 1)[-1] in ("sh", "bash") and words[1] == "-c":
        script = words[2].replace("\\\n", " ")
        # Only `&&`: a `;`, `||` or newline would let the services start after a failed step.
        assert not re.search(r";|\|\||\n", script.strip()), script
        return [shlex.split(step) for step in script.split("&&")]
    return [words]


def cli_accepts(args: list[str]) -> bool:
    """Whether `paymesh ARGS` names a command of paymesh_ops.cli (its --help exits with 0)."""
    with pytest.raises(SystemExit) as exited:
        cli.main([*args, "--help"])
    return exited.value.code == 0


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return env


def container_port(entry: str | int | dict) -> int:
    if isinstance(entry, dict):  # long syntax
        return int(entry["target"])
    return int(str(entry).split("/")[0].rsplit(":", 1)[-1])


def host_ip(entry: str | int | dict) -> str:
    """The host address a port is published on; empty: every address."""
    if isinstance(entry, dict):
        return str(entry.get("host_ip", ""))
    parts = str(entry).split("/")[0].split(":")
    return ":".join(parts[:-2]) if len(parts) > 2 else ""


def host_port(entry: str | int | dict) -> int:
    if isinstance(entry, dict):
        return int(entry.get("published", entry["target"]))
    parts = str(entry).split("/")[0].split(":")
    return int(parts[-2] if len(parts) > 1 else parts[-1])


def ports_of(service: dict) -> set[int]:
    """Every container port a service publishes or exposes on the compose network."""
    ports = {container_port(entry) for entry in service.get("ports", [])}
    return ports | {int(str(port).split("/")[0]) for port in service.get("expose", [])}


def settings_class(service_name: str) -> type[ServiceSettings]:
    """The settings class whose environment prefix is the service's (GATEWAY_ for gateway)."""
    for cls in ServiceSettings.__subclasses__():
        if cls.model_config.get("env_prefix") == f"{service_name.upper()}_":
            return cls
    raise AssertionError(f"no settings class with env_prefix {service_name.upper()}_")


def readers_of(variable: str) -> list[str]:
    """The app services whose settings class reads `variable`."""
    return [
        name
        for name in APP_SERVICES
        if any(
            field.validation_alias == variable
            for field in settings_class(name).model_fields.values()
        )
    ]


def url_host_port(url: str) -> tuple[str | None, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def option(words: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in a command line."""
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


def sandbox_psp_service() -> tuple[str, int]:
    """(compose service, port) of the sandbox PSP, as SANDBOX_API_BASE of the gateway names it."""
    host, port = url_host_port(environment(services()["gateway"])["SANDBOX_API_BASE"])
    assert host in services(), f"SANDBOX_API_BASE points at {host}, not a compose service"
    return host, port


def default_ports(service_name: str) -> dict[str, int]:
    # The model's own defaults, not what this test process's environment would override.
    fields = settings_class(service_name).model_fields
    return {"grpc": fields["grpc_port"].default, "http": fields["http_port"].default}


def envoy_start_script() -> str:
    command = argv(services()["envoy"]["command"])
    assert command[0].rsplit("/", 1)[-1] in ("sh", "bash") and command[1] == "-c", command
    return command[2]


def envoy_rewrite() -> tuple[str, list[str], str]:
    """(input path, sed expressions, output path) of the sed line in the envoy command."""
    script = envoy_start_script().replace("\\\n", " ")
    sed_line = next(line for line in script.splitlines() if line.strip().startswith("sed "))
    words = shlex.split(sed_line)
    assert ">" in words, "the sed line must write the rewritten config with `> file`"
    redirect = words.index(">")
    expressions = [words[i + 1] for i, word in enumerate(words[:redirect]) if word == "-e"]
    return words[redirect - 1], expressions, words[redirect + 1]


def rewritten_envoy_config() -> dict:
    if shutil.which("sed") is None:
        pytest.skip("sed is not installed")
    _, expressions, _ = envoy_rewrite()
    args = [arg for expression in expressions for arg in ("-e", expression)]
    result = subprocess.run(
        ["sed", *args],
        input=(ROOT / "envoy" / "envoy.yaml").read_text(),
        capture_output=True,
        text=True,
        check=True,
    )
    return yaml.safe_load(result.stdout)


def cluster_endpoints(config: dict) -> dict[str, tuple[str, int]]:
    endpoints = {}
    for cluster in config["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for lb_endpoint in group["lb_endpoints"]:
                address = lb_endpoint["endpoint"]["address"]["socket_address"]
                endpoints[cluster["name"]] = (address["address"], int(address["port_value"]))
    return endpoints


def transcoder_descriptor(config: dict) -> str:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for http_filter in manager["typed_config"]["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.grpc_json_transcoder":
            return http_filter["typed_config"]["proto_descriptor"]
    raise AssertionError("envoy.yaml has no gRPC-JSON transcoder")


def dockerfile_copy_targets(stage: str) -> set[str]:
    """Destinations of the COPY lines in one build stage of the Dockerfile."""
    targets, current = set(), None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "FROM":
            current = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else None
        elif words and words[0].upper() == "COPY" and current == stage:
            targets.add(words[-1])
    return targets


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, container path, read-only) of a service's mounts; the source is a host path
    for bind mounts and a volume name for named volumes."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):  # long syntax
            found.append(
                (volume.get("source", ""), volume["target"], bool(volume.get("read_only")))
            )
            continue
        source, target, *options = str(volume).split(":")
        found.append((source, target, "ro" in ",".join(options).split(",")))
    return found


def volume_targets(service: dict) -> dict[str, str]:
    """Container path -> host path (or volume name) of a service's mounts."""
    return {target: source for source, target, _ in mounts(service)}


def named_volume_mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """Container path -> (volume name, read-only) of the top-level volumes a service mounts."""
    declared = compose().get("volumes") or {}
    return {
        target: (source, read_only)
        for source, target, read_only in mounts(service)
        if source in declared
    }


def dockerfile_stage_instructions(stage: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one build stage, continuation lines joined."""
    instructions, current, pending = [], None, ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        words = (pending + line).split(None, 1)
        pending = ""
        keyword, rest = words[0].upper(), (words[1] if len(words) > 1 else "")
        if keyword == "FROM":
            parts = rest.split()
            current = parts[-1] if len(parts) >= 3 and parts[-2].upper() == "AS" else None
        elif current == stage:
            instructions.append((keyword, rest))
    return instructions


def prometheus_targets() -> list[tuple[str, str, int]]:
    """(job, host, port) of every static target and every name a DNS lookup scrapes."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((job["job_name"], host, int(port)))
        for lookup in job.get("dns_sd_configs", []):
            assert lookup.get("type") == "A", "an A lookup needs the port; SRV has its own"
            targets += [(job["job_name"], name, int(lookup["port"])) for name in lookup["names"]]
    return targets


def test_compose_file_is_yaml_with_a_services_mapping():
    assert isinstance(services(), dict)


def test_compose_defines_the_infrastructure_and_the_four_services():
    missing = set(INFRA_SERVICES + APP_SERVICES) - set(services())
    assert not missing, f"docker-compose.yml lacks {sorted(missing)}"


def test_every_app_service_runs_a_package_that_exists():
    for name in APP_SERVICES:
        command = argv(services()[name]["command"])
        assert command[:2] == ["python", "-m"] and len(command) == 3, (name, command)
        package = command[2]
        assert (ROOT / "src" / package / "__main__.py").is_file(), (name, package)


def test_the_migrate_service_runs_the_installed_console_script():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^paymesh = "paymesh_ops\.cli:main"$', pyproject, re.MULTILINE)
    steps = command_steps(services()["migrate"]["command"])
    for step in steps:
        assert step[0] == "paymesh" and cli_accepts(step[1:]), step


def test_the_migrate_service_migrates_and_creates_the_keys_and_the_keyring():
    steps = command_steps(services()["migrate"]["command"])
    for step in MIGRATE_STEPS:
        assert step in steps, f"the migrate service does not run `{' '.join(step)}`"


def test_the_commands_in_the_header_comment_exist():
    header = []
    for line in (ROOT / "docker-compose.yml").read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    commands = [
        shlex.split(found)
        for found in re.findall(r"docker compose exec (.+)$", "\n".join(header), re.MULTILINE)
    ]
    assert ["gateway", "paymesh", "merchants", "create", "--name", "acme"] in commands
    for service, *command in commands:
        assert service in PAYMESH_IMAGE_SERVICES and command[0] == "paymesh", command
        assert cli_accepts(command[1:]), command


def test_the_paymesh_containers_keep_keys_and_keyring_in_one_writable_named_volume():
    volumes = set()
    for name in PAYMESH_IMAGE_SERVICES:
        service = services()[name]
        env = environment(service)
        paths = {"PAYMESH_KEYS_DIR": env.get("PAYMESH_KEYS_DIR")}
        if name in ("vault", "migrate"):  # migrate creates the keyring the vault uses
            paths["VAULT_KEYRING_FILE"] = env.get("VAULT_KEYRING_FILE")
        named = named_volume_mounts(service)
        for variable, value in paths.items():
            assert value, f"{name} does not set {variable}"
            path = PurePosixPath(value)
            assert path.is_absolute(), (name, variable, value)
            # The keys dir itself is created inside the volume by `paymesh keys init`.
            inside = [target for target in named if path.is_relative_to(target) and path != target]
            assert inside, f"{name}: {variable}={value} is not inside a named volume"
            volume, read_only = named[inside[0]]
            # migrate creates both; the vault adds KEK versions to its keyring.
            if name in ("vault", "migrate"):
                assert not read_only, f"{name} mounts {volume} read-only"
            volumes.add(volume)
    assert len(volumes) == 1, f"keys and keyring are spread over volumes {sorted(volumes)}"


def test_the_app_services_read_the_keys_and_keyring_where_migrate_creates_them():
    created = environment(services()["migrate"])
    for name in APP_SERVICES:
        env = environment(services()[name])
        assert env["PAYMESH_KEYS_DIR"] == created["PAYMESH_KEYS_DIR"], name
    assert environment(services()["vault"])["VAULT_KEYRING_FILE"] == created["VAULT_KEYRING_FILE"]


def test_the_image_gives_the_secrets_mount_point_to_its_user():
    """An empty named volume takes the owner and mode of the image's directory: created as
    root, the non-root services could not write their keys there."""
    targets = {
        target
        for name in PAYMESH_IMAGE_SERVICES
        for target in named_volume_mounts(services()[name])
    }
    assert targets
    instructions = dockerfile_stage_instructions(services()["migrate"]["build"]["target"])
    users = [i for i, (keyword, _) in enumerate(instructions) if keyword == "USER"]
    assert users, "the app image runs as root"
    user = instructions[users[-1]][1].split(":")[0].strip()
    assert user not in ("root", "0"), user
    before_user = [rest for keyword, rest in instructions[: users[-1]] if keyword == "RUN"]
    for target in targets:
        owned = re.compile(
            rf"(chown (-R )?{re.escape(user)}\b[^&;]*|install -d [^&;]*-o {re.escape(user)}\b"
            rf"[^&;]*) {re.escape(target)}/?(\s|$)"
        )
        assert any(owned.search(run) for run in before_user), (
            f"the image does not create {target} owned by {user} before `USER {user}`"
        )


def test_the_vault_reaches_stripe_at_a_compose_service():
    vault = services()["vault"]
    env = environment(vault)
    assert env.get("STRIPE_SECRET_KEY"), "the vault has no STRIPE_SECRET_KEY"
    url = urlsplit(env["STRIPE_API_BASE"])
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    all_services = services()
    assert host in all_services, f"STRIPE_API_BASE points at {host}, not a compose service"
    assert port in ports_of(all_services[host]), f"{host} has no port {port}"
    assert f"--port {port}" in " ".join(argv(all_services[host]["command"])), host
    assert host in (vault.get("depends_on") or {}), f"the vault does not wait for {host}"


def test_the_psp_readers_reach_each_psp_at_a_compose_service_serving_its_port():
    """Every app service whose settings read a PSP's base URL gets one naming the compose
    service of that PSP, which serves the URL's port, and waits for it to be healthy."""
    assert set(SANDBOX_CLIENTS) <= set(readers_of("SANDBOX_API_BASE"))
    all_services = services()
    for variable, psp in PSP_URL_VARIABLES.items():
        readers = readers_of(variable)
        assert readers, f"no settings class reads {variable}"
        for name in readers:
            service = all_services[name]
            url = environment(service).get(variable)
            assert url, f"{name} does not set {variable}"
            host, port = url_host_port(url)
            assert host == psp, f"{name}: {variable}={url} does not point at {psp}"
            # Some HTTP clients refuse host names with underscores.
            assert "_" not in host, f"{name}: {variable} host {host} has an underscore"
            assert port in ports_of(all_services[host]), f"{host} has no port {port}"
            assert f"--port {port}" in " ".join(argv(all_services[host]["command"])), host
            depends_on = service.get("depends_on") or {}
            assert host in depends_on, f"{name} does not wait for {host}"
            assert depends_on[host]["condition"] == "service_healthy", (name, host)


def test_the_app_services_agree_on_the_sandbox_psp_url():
    urls = {name: environment(services()[name]).get("SANDBOX_API_BASE") for name in APP_SERVICES}
    assert len({url for url in urls.values() if url}) == 1, urls


def test_the_sandbox_psp_runs_from_an_image_of_its_own_on_its_port():
    host, port = sandbox_psp_service()
    service = services()[host]
    # A developer tool: built from its own Dockerfile stage, never from the app image.
    assert service["build"]["target"] == "sandbox-psp", host
    assert service.get("image") != services()["migrate"]["image"], host
    script = f"/opt/sandbox/{Path(sandbox_psp.__file__).name}"
    assert script in dockerfile_copy_targets("sandbox-psp")
    command = argv(service["command"])
    assert command[:2] == ["python", script], command
    assert option(command, "--port") == str(port), command
    # The default, 127.0.0.1, would leave it unreachable from the other containers.
    assert option(command, "--host") == "0.0.0.0", command
    assert port in {container_port(entry) for entry in service.get("ports", [])}, host
    for name in SANDBOX_CLIENTS:
        depends_on = services()[name].get("depends_on") or {}
        assert depends_on.get(host, {}).get("condition") == "service_healthy", name


def test_the_service_image_ships_no_developer_tools():
    # The image installs the packages of src/ alone; the developer tools live in dev/, beside.
    copies = [
        rest.split() for keyword, rest in dockerfile_stage_instructions("app") if keyword == "COPY"
    ]
    sources = {word for words in copies for word in words[:-1] if not word.startswith("--")}
    assert sources == {"pyproject.toml", "src/"}, sources
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]
    tools = {path.name for path in (ROOT / "dev").glob("*.py") if path.name != "__init__.py"}
    assert {"devmesh.py", "devinfra.py", "sandbox_psp.py", "localstripe_cards.py"} <= tools
    assert not [path for path in (ROOT / "src").rglob("*.py") if path.name in tools]


def test_the_sandbox_psp_healthcheck_passes_against_a_running_sandbox_psp():
    host, port = sandbox_psp_service()
    test = argv(services()[host]["healthcheck"]["test"])
    assert test[:2] == ["CMD", "python"], test
    probe = test[1:]
    url = f"http://127.0.0.1:{port}/_stats"
    assert any(url in word for word in probe), f"the healthcheck does not GET {url}"
    server = ThreadingHTTPServer(("127.0.0.1", 0), sandbox_psp.make_handler(sandbox_psp.Sandbox()))
    local_port = server.server_address[1]
    local_probe = [sys.executable] + [
        word.replace(url, f"http://127.0.0.1:{local_port}/_stats") for word in probe[1:]
    ]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(local_probe, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    # And it fails once nothing answers.
    down = subprocess.run(local_probe, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0


def test_every_published_port_but_envoys_public_one_is_on_the_host_loopback():
    for name, service in services().items():
        for entry in service.get("ports", []):
            if (name, host_port(entry)) in PUBLIC_PORTS:
                continue
            assert host_ip(entry) == "127.0.0.1", f"{name} publishes {entry} beyond loopback"


def test_every_environment_variable_of_the_paymesh_containers_is_in_env_example():
    known = env_example_names()
    assert set(PAYMESH_IMAGE_SERVICES) <= set(paymesh_image_services())
    for name in paymesh_image_services():
        unknown = set(environment(services()[name])) - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which .env.example does not list"


def test_every_service_address_points_at_the_service_container_and_its_grpc_port():
    for name in APP_SERVICES:
        env = environment(services()[name])
        for peer in APP_SERVICES:
            host, port = env[f"{peer.upper()}_ADDR"].rsplit(":", 1)
            assert host == peer and int(port) == default_ports(peer)["grpc"], (name, peer)


def test_every_app_service_publishes_its_default_grpc_and_http_ports():
    for name in APP_SERVICES:
        expected = set(default_ports(name).values())
        ports = services()[name].get("ports", [])
        assert {container_port(entry) for entry in ports} == expected, name
        assert {host_port(entry) for entry in ports} == expected, name


def test_every_app_service_healthcheck_probes_its_own_readyz():
    for name in APP_SERVICES:
        probe = " ".join(argv(services()[name]["healthcheck"]["test"]))
        assert f"http://127.0.0.1:{default_ports(name)['http']}/readyz" in probe, name


def test_every_service_healthy_dependency_has_a_healthcheck():
    all_services = services()
    for name, service in all_services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):  # short syntax: service_started only
            continue
        for dependency, condition in depends_on.items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in all_services[dependency], (
                    f"{name} waits for {dependency} to be healthy; it has no healthcheck"
                )


def test_the_app_services_wait_for_their_dependencies_and_the_migrations():
    for name in APP_SERVICES:
        depends_on = services()[name]["depends_on"]
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["rabbitmq"]["condition"] == "service_healthy", name
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name


def test_every_prometheus_target_is_a_port_of_a_compose_service():
    all_services = services()
    targets = prometheus_targets()
    assert targets
    for job, host, port in targets:
        assert host in all_services, f"job {job}: {host} is not a compose service"
        assert port in ports_of(all_services[host]), f"job {job}: {host} has no port {port}"


def test_prometheus_scrapes_every_app_service_and_envoy():
    scraped = {(host, port) for _, host, port in prometheus_targets()}
    for name in APP_SERVICES:
        assert (name, default_ports(name)["http"]) in scraped, name
    admin_port = yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text())["admin"]
    assert ("envoy", admin_port["address"]["socket_address"]["port_value"]) in scraped


def test_the_envoy_rewrite_reads_the_mounted_envoy_yaml_and_envoy_runs_its_output():
    source, _, output = envoy_rewrite()
    assert volume_targets(services()["envoy"]).get(source) == "./envoy/envoy.yaml"
    assert re.search(rf"\benvoy -c {re.escape(output)}( |$)", envoy_start_script(), re.MULTILINE)


def test_the_envoy_rewrite_covers_every_upstream_port_in_envoy_yaml():
    original = cluster_endpoints(yaml.safe_load((ROOT / "envoy" / "envoy.yaml").read_text()))
    rewritten_config = rewritten_envoy_config()
    rewritten = cluster_endpoints(rewritten_config)
    all_services = services()
    assert set(rewritten) == set(original)
    for cluster, (_, port) in original.items():
        host, new_port = rewritten[cluster]
        assert new_port == port, cluster
        assert host in all_services, f"cluster {cluster} still points at {host}"
        assert port in ports_of(all_services[host]), f"{host} does not expose {port}"
    for cluster in rewritten_config["static_resources"]["clusters"]:
        # STATIC clusters take IP addresses only; container names need DNS.
        assert cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS"), cluster["name"]


def test_the_envoy_rewrite_points_the_transcoder_at_the_descriptor_in_the_container():
    descriptor = transcoder_descriptor(rewritten_envoy_config())
    envoy = services()["envoy"]
    built_in = envoy.get("build", {}).get("target")
    in_container = set(volume_targets(envoy))
    if built_in:
        in_container |= dockerfile_copy_targets(built_in)
    assert descriptor.startswith("/") and descriptor in in_container, descriptor


def test_the_envoy_admin_port_is_reachable_by_prometheus_after_the_rewrite():
    admin = rewritten_envoy_config()["admin"]["address"]["socket_address"]
    assert admin["address"] not in ("127.0.0.1", "localhost", "::1")


def test_the_app_services_listen_beyond_loopback_with_settings_they_accept(monkeypatch):
    """The default BIND_HOST is loopback, unreachable from the other containers; beyond
    loopback a service insists on mTLS or explicitly allowed plaintext."""
    for name in APP_SERVICES:
        env = environment(services()[name])
        with monkeypatch.context() as patched:
            for variable, value in env.items():
                patched.setenv(variable, str(value))
            settings = settings_class(name)()
        assert settings.bind_host == "0.0.0.0", name
        assert settings.tls_dir or settings.allow_plaintext, name


def test_the_gateway_replica_is_the_gateway_again_under_its_name_without_host_ports():
    gateway, replica = services()["gateway"], services()["gateway-replica"]
    for key in ("image", "command", "environment", "volumes", "depends_on", "healthcheck"):
        assert replica.get(key) == gateway.get(key), key
    assert not replica.get("ports"), "a second container cannot publish the same host ports"
    assert ports_of(replica) == set(default_ports("gateway").values())
    assert "gateway" in replica["networks"]["default"]["aliases"]


def test_envoy_and_prometheus_find_every_gateway_by_dns():
    [gateway] = [
        c
        for c in rewritten_envoy_config()["static_resources"]["clusters"]
        if c["name"] == "gateway"
    ]
    assert gateway["type"] == "STRICT_DNS"  # one upstream host per address the name has
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "gateway"]
    assert job["dns_sd_configs"][0]["names"] == ["gateway"]


def mounted_source(service: dict, container_path: PurePosixPath) -> Path | None:
    """The repo path a bind mount of `service` shows at `container_path` (a file, or inside a
    mounted directory); None when nothing mounted holds it."""
    for source, target, _ in mounts(service):
        if source.startswith("./") and container_path.is_relative_to(target):
            return ROOT / source / container_path.relative_to(target)
    return None


def grafana_provisioning(kind: str) -> list[dict]:
    """The provisioning documents of one kind (datasources, dashboards) Grafana reads."""
    directory = mounted_source(services()["grafana"], PurePosixPath("/etc/grafana/provisioning"))
    assert directory is not None, "grafana does not mount a provisioning directory"
    files = sorted((directory / kind).glob("*.y*ml"))
    assert files, f"no {kind} provisioning under {directory / kind}"
    return [yaml.safe_load(path.read_text()) for path in files]


def dashboard_panels(panels: list[dict]) -> list[dict]:
    found = []
    for panel in panels:
        found += dashboard_panels(panel.get("panels", [])) if panel["type"] == "row" else [panel]
    return found


def test_prometheus_loads_the_alert_rules_mounted_beside_its_config():
    prometheus = services()["prometheus"]
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    container_config = next(
        PurePosixPath(target)
        for source, target, _ in mounts(prometheus)
        if source == "./prometheus/prometheus.yml"
    )
    assert config["rule_files"], "prometheus.yml loads no alert rules"
    for rule_file in config["rule_files"]:
        source = mounted_source(prometheus, container_config.parent / rule_file)
        assert source is not None, f"{rule_file} is not mounted beside prometheus.yml"
        assert source.resolve() == (ROOT / "prometheus" / "alerts.yml").resolve()
        groups = yaml.safe_load(source.read_text())["groups"]
        assert any(rule.get("alert") == "HighPSPErrorRate" for g in groups for rule in g["rules"])


def test_grafana_reads_the_prometheus_of_the_compose_file():
    [datasource] = [d for doc in grafana_provisioning("datasources") for d in doc["datasources"]]
    host, port = url_host_port(datasource["url"])
    assert host == "prometheus" and port in ports_of(services()["prometheus"]), datasource["url"]
    assert "prometheus" in services()["grafana"]["depends_on"]


def test_grafana_provisions_every_dashboard_under_grafana_and_each_uses_that_datasource():
    [datasource] = [d for doc in grafana_provisioning("datasources") for d in doc["datasources"]]
    [provider] = [p for doc in grafana_provisioning("dashboards") for p in doc["providers"]]
    directory = mounted_source(services()["grafana"], PurePosixPath(provider["options"]["path"]))
    assert directory is not None and directory.resolve() == (ROOT / "grafana" / "dashboards")
    dashboards = [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]
    assert len(dashboards) >= 4
    uids = [dashboard["uid"] for dashboard in dashboards]
    assert len(set(uids)) == len(uids), uids
    for dashboard in dashboards:
        for panel in dashboard_panels(dashboard["panels"]):
            where = f"{dashboard['uid']}: {panel['title']}"
            assert panel["datasource"]["uid"] == datasource["uid"], where
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), where


def test_prometheus_scrapes_every_rebill_worker_and_every_gateway_replica_by_dns():
    """A worker's own heartbeat age and job metrics are on its port only (it was not
    scraped); replicas without a name of their own are found by an A lookup of the name
    they answer to."""
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    looked_up = {
        (name, int(lookup["port"]))
        for job in config["scrape_configs"]
        for lookup in job.get("dns_sd_configs", [])
        for name in lookup["names"]
    }
    worker_port = RebillSettings.model_fields["worker_http_port"].default
    assert ("rebill-worker", worker_port) in looked_up
    assert services()["rebill-worker"]["command"][-1] == "rebill_svc.worker"
    replica_aliases = services()["gateway-replica"]["networks"]["default"]["aliases"]
    assert ("gateway", default_ports("gateway")["http"]) in looked_up
    assert "gateway" in replica_aliases


@pytest.mark.parametrize(
    ("container", "service"),
    [*((name, name) for name in APP_SERVICES), ("rebill-worker", "rebill")],
)
def test_each_app_container_connects_as_its_services_role_and_migrate_as_the_owner(
    monkeypatch, container, service
):
    """`paymesh migrate` (DATABASE_URL) creates the roles and owns the schemas; a service
    reads `<PREFIX>DATABASE_URL` and is on the database as `paymesh_<service>` (README,
    Configuration)."""
    with monkeypatch.context() as patched:
        for variable, value in environment(services()[container]).items():
            patched.setenv(variable, str(value))
        settings = settings_class(service)()
    assert urlsplit(settings.database_url).username == f"paymesh_{service}"
    assert urlsplit(settings.database_url).hostname == "postgres"
    migrate = environment(services()["migrate"])
    assert urlsplit(migrate["DATABASE_URL"]).username == "postgres"
