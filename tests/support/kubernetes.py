"""The Kubernetes manifests as the tests read them: tools/render_k8s.py's output, KEDA's CRD
schemas made strict, and the environment variables the code reads."""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
CRDS = KUBERNETES / "crds"
OVERLAYS = ("dev", "production")
# The Kubernetes release whose schemas the objects must pass (gRPC probes are GA since 1.27).
KUBERNETES_VERSION = "1.31"


@functools.cache
def render_tool() -> ModuleType:
    """tools/render_k8s.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("render_k8s", ROOT / "tools" / "render_k8s.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_k8s"] = module
    spec.loader.exec_module(module)
    return module


@functools.cache
def _rendered(overlay: str) -> tuple[list[dict], list[dict]]:
    objects, hooks = render_tool().render(overlay)
    return objects, hooks


def rendered(overlay: str) -> tuple[list[dict], list[dict]]:
    """(objects, pre-rollout hooks) of an overlay, as `make k8s` writes them (a fresh copy)."""
    return copy.deepcopy(_rendered(overlay))


def everything(overlay: str) -> list[dict]:
    objects, hooks = rendered(overlay)
    return [*objects, *hooks]


def find(objects: list[dict], kind: str, name: str) -> dict:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        spec: dict = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]


def image_name(container: dict) -> str:
    result: str = render_tool().image_name(container["image"])
    return result.rsplit("/", 1)[-1]


# --- Schemas -----------------------------------------------------------------------------

# kubernetes-validate reads and parses its schema files (the definitions: megabytes of JSON)
# again for every object it validates: read each once, or the tests take seconds more.
kubernetes_validate.utils.schema_contents = functools.cache(
    kubernetes_validate.utils.schema_contents
)


def validate_builtin(obj: dict) -> None:
    """Raises kubernetes_validate.ValidationError (or SchemaNotFoundError) unless `obj`
    passes the strict schema of its kind in KUBERNETES_VERSION."""
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# --- KEDA's custom resources -------------------------------------------------------------


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) → the strict openAPIV3Schema of each CRD shipped in crds/."""
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = render_tool().load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = strict(version["schema"]["openAPIV3Schema"])
    return schemas


def strict(schema: Any) -> Any:
    """The schema with every object closed to fields it does not declare: the API server
    prunes unknown fields of a custom resource in silence, so a misspelt field would be
    dropped, not refused. Objects that preserve unknown fields, or declare
    additionalProperties, keep their schema."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


def validate_custom(obj: dict) -> None:
    """Raises jsonschema.ValidationError if `obj` breaks its CRD's (strict) schema."""
    schema = crd_schemas()[(obj["apiVersion"], obj["kind"])]
    jsonschema.Draft7Validator(schema).validate(obj)


# --- What the code reads from the environment --------------------------------------------


def settings_variables(settings_class: type[BaseSettings]) -> set[str]:
    """The environment variables a pydantic-settings class reads: each field's
    validation_alias, else the class's env_prefix and the field's name."""
    prefix = settings_class.model_config.get("env_prefix") or ""
    names = set()
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices) and all(isinstance(c, str) for c in alias.choices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif alias is None:
            names.add(f"{prefix}{name}".upper())
        else:
            raise AssertionError(f"{settings_class.__name__}.{name}: alias {alias!r} unread")
    return names


def environ_reads(*paths: Path) -> set[str]:
    """Names read as os.environ.get("X"), os.environ["X"] or os.getenv("X") in the files."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _is_environ_get(node.func) and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
            if (
                isinstance(node, ast.Subscript)
                and _is_environ(node.value)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
            ):
                names.add(node.slice.value)
    return names


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _is_environ_get(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "get" and _is_environ(node.value):
        return True
    return isinstance(node, ast.Attribute) and node.attr == "getenv"


def container_env(container: dict, objects: list[dict]) -> dict[str, dict]:
    """Every variable a container gets: its `env` entries and the keys of the ConfigMaps its
    `envFrom` names (as {"value": …})."""
    env = {}
    for source in container.get("envFrom", []):
        config_map = find(objects, "ConfigMap", source["configMapRef"]["name"])
        for key, value in config_map["data"].items():
            env[key] = {"name": key, "value": value}
    for entry in container.get("env", []):
        env[entry["name"]] = entry
    return env
