"""Renders deploy/kubernetes/overlays/<overlay> into build/k8s/<overlay>.yaml (`make k8s`).

The `kustomize` binary is not at hand, so this reads the part of Kustomize that paymesh's
kustomization.yaml files use, and refuses any other field rather than ignore it:
- `resources`: files (any number of YAML documents) and directories with a kustomization;
- `patches`: a strategic-merge patch (a partial object; lists of containers, env, volumes,
  volume mounts and ports merge by their key, `$patch: delete` drops an item, `null` drops a
  field) or a JSON 6902 patch (a list of add/replace/remove operations) on `target`;
- `namespace`, `images` (newName/newTag/digest) and `labels` (pairs, includeTemplates; never
  selectors).
Then it adds what Kustomize could not make: the ConfigMap `envoy`, from envoy/envoy.yaml (the
file `make run` and compose use) with its upstreams moved to the rendered Services, and the
digest of that configuration on Envoy's pod template, so that a changed configuration rolls
Envoy's pods.

Objects Argo CD runs as a PreSync hook (the migration Job) go to <overlay>-migrate.yaml
instead, to be applied and waited for before the rest (README.md, "Deploy to Kubernetes").

    python tools/render_k8s.py [--out build/k8s] [overlay ...]   (default: every overlay)
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = KUBERNETES / "overlays"
ENVOY_TEMPLATE = ROOT / "envoy" / "envoy.yaml"
CLUSTER_DOMAIN = "cluster.local"
# Where the envoy image (Dockerfile, stage envoy) keeps the files make run takes from build/.
ENVOY_FILES = {
    "build/paymesh.pb": "/etc/paymesh/paymesh.pb",
    "build/openapi.json": "/etc/paymesh/openapi.json",
    "build/edge.lua": "/etc/paymesh/edge.lua",
}
ENVOY_CONFIG_KEY = "paymesh.yaml"
ENVOY_DIGEST_ANNOTATION = "paymesh.dev/envoy-config-sha256"
HOOK_ANNOTATION = "argocd.argoproj.io/hook"
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "patches", "namespace", "images", "labels"}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
# Strategic merge: the key that identifies an item in each list Kubernetes merges by key.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "envFrom": None,  # replaced whole
    "volumeMounts": "mountPath",
    "ports": ("containerPort", "port"),
    "imagePullSecrets": "name",
    "items": "key",
    "sources": None,
}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

Obj = dict[str, Any]
# libyaml when PyYAML has it: the pure-Python parser takes seconds over these files.
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a safe loader


def load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=Loader))  # noqa: S506 - a safe loader


class KustomizeError(Exception):
    pass


# --- Kustomize, the subset ---------------------------------------------------------------


def build(directory: Path) -> list[Obj]:
    """The objects of the kustomization in `directory`, its transformations applied."""
    kustomization = load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(
            f"{directory / 'kustomization.yaml'}: unsupported field(s) {sorted(unknown)}: "
            "tools/render_k8s.py reads only " + ", ".join(sorted(SUPPORTED_FIELDS))
        )
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            objects += build(path)
        else:
            objects += [doc for doc in load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        apply_patch(objects, patch, directory)
    if "namespace" in kustomization:
        set_namespace(objects, kustomization["namespace"])
    for labels in kustomization.get("labels", []):
        add_labels(objects, labels)
    for image in kustomization.get("images", []):
        set_image(objects, image)
    return objects


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(matches) != 1:
        raise KustomizeError(f"patch target {kind}/{name}: {len(matches)} objects match")
    return matches[0]


def apply_patch(objects: list[Obj], patch: Obj, directory: Path) -> None:
    if "path" in patch:
        body = load((directory / patch["path"]).read_text())
    else:
        body = load(patch["patch"])
    target = patch.get("target")
    if isinstance(body, list):  # JSON 6902
        if not target:
            raise KustomizeError("a JSON 6902 patch needs a target (kind and name)")
        json_patch(find(objects, target["kind"], target["name"]), body)
        return
    kind = (target or {}).get("kind") or body["kind"]
    name = (target or {}).get("name") or body["metadata"]["name"]
    found = find(objects, kind, name)
    merged = strategic_merge(found, body)
    found.clear()
    found.update(merged)


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    """`patch` merged into `base` as Kubernetes' strategic merge patch does, for the lists
    MERGE_KEYS names; any other list is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = _without_directives(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list):
        key = _merge_key(field, base + patch)
        if key is None:
            return _without_directives(patch)
        merged_list = list(base)
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old[key] == item[key]), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    del merged_list[index]
            elif index is None:
                merged_list.append(_without_directives(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item, None)
        return merged_list
    return _without_directives(patch)


def _merge_key(field: str | None, items: list[Any]) -> str | None:
    keys = MERGE_KEYS.get(field or "")
    if keys is None or not all(isinstance(i, dict) for i in items):
        return None
    for key in (keys,) if isinstance(keys, str) else keys:
        if all(key in i for i in items):
            return key
    return None


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_directives(v) for k, v in value.items() if k != "$patch"}
    if isinstance(value, list):
        return [_without_directives(v) for v in value]
    return value


def json_patch(document: Obj, operations: list[Obj]) -> None:
    """RFC 6902's add, replace and remove, in place."""
    for operation in operations:
        op, path = operation["op"], operation["path"]
        if op not in ("add", "replace", "remove"):
            raise KustomizeError(f"JSON patch operation {op!r} is not supported")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        parent: Any = document
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        if isinstance(parent, list):
            if op == "add":
                index = len(parent) if last == "-" else int(last)
                parent.insert(index, copy.deepcopy(operation["value"]))
            elif op == "replace":
                parent[int(last)] = copy.deepcopy(operation["value"])
            else:
                del parent[int(last)]
        elif op != "add" and last not in parent:
            raise KustomizeError(f"JSON patch {op} {path}: no such field")
        elif op == "remove":
            del parent[last]
        else:
            parent[last] = copy.deepcopy(operation["value"])


def set_namespace(objects: list[Obj], namespace: str) -> None:
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace


def add_labels(objects: list[Obj], labels: Obj) -> None:
    unknown = set(labels) - {"pairs", "includeTemplates"}
    if unknown:
        raise KustomizeError(f"labels: unsupported option(s) {sorted(unknown)}")
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(labels["pairs"])
        template = _pod_template(obj)
        if labels.get("includeTemplates") and template is not None:
            template.setdefault("metadata", {}).setdefault("labels", {}).update(labels["pairs"])


def _pod_template(obj: Obj) -> Obj | None:
    if obj["kind"] in POD_TEMPLATE_KINDS:
        template: Obj = obj["spec"]["template"]
        return template
    return None


def containers_of(obj: Obj) -> list[Obj]:
    template = _pod_template(obj)
    if template is None:
        return []
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def image_name(image: str) -> str:
    """`registry:5000/paymesh:1.0@sha256:…` → `registry:5000/paymesh`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def set_image(objects: list[Obj], image: Obj) -> None:
    for obj in objects:
        for container in containers_of(obj):
            if image_name(container["image"]) != image["name"]:
                continue
            reference = image.get("newName", image["name"])
            if "digest" in image:
                reference += f"@{image['digest']}"
            elif "newTag" in image:
                reference += f":{image['newTag']}"
            container["image"] = reference


# --- What Kustomize could not make: Envoy's configuration ----------------------------------


def envoy_config(objects: list[Obj]) -> str:
    """envoy/envoy.yaml with each service cluster on its Service's DNS name (STRICT_DNS: a
    headless Service resolves to every ready pod) and gRPC port, the image's file paths, and
    no tracing (no collector in the cluster; OTLP would need a cluster of its own)."""
    config = load(ENVOY_TEMPLATE.read_text())
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    manager["typed_config"].pop("tracing", None)
    clusters = config["static_resources"]["clusters"]
    clusters[:] = [c for c in clusters if c["name"] != "otel_collector"]
    for cluster in clusters:
        service = find(objects, "Service", cluster["name"])
        if service["spec"].get("clusterIP") != "None":
            raise KustomizeError(f"Service {cluster['name']} must be headless for Envoy")
        [port] = [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"]
        namespace = service["metadata"].get("namespace", "default")
        cluster["type"] = "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_PREFERRED"
        [group] = cluster["load_assignment"]["endpoints"]
        [endpoint] = group["lb_endpoints"]
        endpoint["endpoint"]["address"]["socket_address"] = {
            "address": f"{cluster['name']}.{namespace}.svc.{CLUSTER_DOMAIN}",
            "port_value": port,
        }
    text = yaml.dump(config, Dumper=BaseDumper, sort_keys=False)
    for build_path, image_path in ENVOY_FILES.items():
        text = text.replace(build_path, image_path)
    return text


def add_envoy_config(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "envoy")
    text = envoy_config(objects)
    metadata: Obj = {"name": "envoy", "labels": dict(deployment["metadata"].get("labels", {}))}
    if "namespace" in deployment["metadata"]:
        metadata["namespace"] = deployment["metadata"]["namespace"]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {ENVOY_CONFIG_KEY: text},
    }
    objects.insert(objects.index(deployment), config_map)
    annotations = deployment["spec"]["template"]["metadata"].setdefault("annotations", {})
    annotations[ENVOY_DIGEST_ANNOTATION] = hashlib.sha256(text.encode()).hexdigest()


# --- The whole step ----------------------------------------------------------------------


def render(overlay: str) -> tuple[list[Obj], list[Obj]]:
    """(the objects to apply, the hooks to run to completion before them) of an overlay."""
    objects = build(OVERLAYS / overlay)
    add_envoy_config(objects)
    hooks = [o for o in objects if HOOK_ANNOTATION in o["metadata"].get("annotations", {})]
    return [o for o in objects if o not in hooks], hooks


class _Dumper(BaseDumper):  # type: ignore[misc,valid-type]
    """Multi-line strings (Envoy's configuration) as literal blocks, readable in the output."""


def _string(dumper: Any, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def dump(objects: list[Obj]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "k8s")
    parser.add_argument("overlays", nargs="*", default=sorted(p.name for p in OVERLAYS.iterdir()))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for overlay in args.overlays:
        try:
            objects, hooks = render(overlay)
        except (KustomizeError, OSError) as error:
            print(f"render_k8s: {overlay}: {error}", file=sys.stderr)
            return 1
        (args.out / f"{overlay}.yaml").write_text(dump(objects))
        (args.out / f"{overlay}-migrate.yaml").write_text(dump(hooks))
        print(
            f"{args.out / f'{overlay}.yaml'}: {len(objects)} objects; "
            f"{args.out / f'{overlay}-migrate.yaml'}: {len(hooks)} (apply and wait first)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
