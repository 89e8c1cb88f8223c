"""The cluster configs of infra/: the KubeRay manifests against KubeRay's own CRD schemas, the Ray
cluster launcher config through Ray's own validation, the sweep they run through qtrust's spec, and
one set of image names throughout.

KubeRay's CRDs are read at test time from ``../shared/schemas/kuberay`` beside the repository (or
``$QTRUST_KUBERAY_SCHEMAS``); they are not copied into the project.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
LAUNCHER = INFRA / "ray" / "cluster.yaml"
SWEEP = INFRA / "ray" / "gpu-sweep.yaml"
IMAGES_ENV = INFRA / "docker" / "images.env"


# --------------------------------------------------------------------------------------------------
# KubeRay CRD schemas


def kuberay_schema_dir() -> Path:
    """``$QTRUST_KUBERAY_SCHEMAS``, else ``schemas/kuberay`` beside the benchmark data folder (the shared
    folder's layout: ``$QTRUST_DATA_DIR/../schemas``), else ``../shared/schemas/kuberay`` beside the repository."""
    data = os.environ.get("QTRUST_DATA_DIR")
    beside_data = Path(data).parent / "schemas" / "kuberay" if data else None
    default = (
        beside_data
        if beside_data is not None and beside_data.is_dir()
        else REPO.parent / "shared" / "schemas" / "kuberay"
    )
    path = Path(os.environ.get("QTRUST_KUBERAY_SCHEMAS") or default)
    if not (path / "ray.io_rayclusters.yaml").is_file() or not (path / "ray.io_rayjobs.yaml").is_file():
        pytest.fail(
            f"KubeRay CRD schemas not found in {path}: these tests need ray.io_rayclusters.yaml and "
            "ray.io_rayjobs.yaml from ray-project/kuberay (ray-operator/config/crd/bases); put them in "
            "../shared/schemas/kuberay beside the repository or set QTRUST_KUBERAY_SCHEMAS to their folder"
        )
    return path


def kubernetes_strict(schema: Any) -> Any:
    """A CRD's OpenAPI schema as the API server applies it, in plain JSON Schema terms.

    - ``x-kubernetes-int-or-string`` fields (resource quantities, ports) take an integer or a string;
      jsonschema does not know the extension and would accept anything.
    - Objects with declared properties reject unknown fields, as the API server's strict field
      validation (kubectl's default) does, unless ``x-kubernetes-preserve-unknown-fields`` says otherwise.
    """
    if isinstance(schema, list):
        return [kubernetes_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: kubernetes_strict(value) for key, value in schema.items()}
    if schema.get("x-kubernetes-int-or-string") is True:
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        out.get("type") == "object"
        and isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class CRD:
    def __init__(self, path: Path):
        crd = yaml.safe_load(path.read_text())
        assert crd["kind"] == "CustomResourceDefinition", path
        self.group = crd["spec"]["group"]
        self.kind = crd["spec"]["names"]["kind"]
        served = [v for v in crd["spec"]["versions"] if v.get("served")]
        storage = [v for v in served if v.get("storage")] or served
        self.version = storage[0]["name"]
        self.served = {v["name"] for v in served}
        schema = kubernetes_strict(storage[0]["schema"]["openAPIV3Schema"])
        jsonschema.Draft7Validator.check_schema(schema)
        self.validator = jsonschema.Draft7Validator(schema)

    def errors(self, manifest: dict) -> list[str]:
        found = [
            f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in self.validator.iter_errors(manifest)
        ]
        if manifest.get("apiVersion") != f"{self.group}/{self.version}":
            found.append(f"apiVersion: {manifest.get('apiVersion')!r}, expected {self.group}/{self.version}")
        if manifest.get("kind") != self.kind:
            found.append(f"kind: {manifest.get('kind')!r}, expected {self.kind}")
        name = (manifest.get("metadata") or {}).get("name", "")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
            found.append(f"metadata.name: {name!r} is not a DNS-1123 label")
        return found


@pytest.fixture(scope="module")
def crds() -> dict[str, CRD]:
    folder = kuberay_schema_dir()
    return {"RayCluster": CRD(folder / "ray.io_rayclusters.yaml"), "RayJob": CRD(folder / "ray.io_rayjobs.yaml")}


def raycluster() -> dict:
    return yaml.safe_load(RAYCLUSTER.read_text())


def rayjob_documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert sorted(by_kind) == ["ConfigMap", "RayJob"] and len(docs) == 2, [d["kind"] for d in docs]
    return by_kind


def test_raycluster_passes_kuberays_crd_schema(crds: dict[str, CRD]) -> None:
    assert crds["RayCluster"].errors(raycluster()) == []


def test_rayjob_passes_kuberays_crd_schema(crds: dict[str, CRD]) -> None:
    assert crds["RayJob"].errors(rayjob_documents()["RayJob"]) == []


def _set(doc: dict, path: str, value: Any) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def _drop(doc: dict, path: str) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[last]
    return doc


# case -> (how, field path, value, what the error must say)
BROKEN_RAYCLUSTERS = {
    "replicas as words": ("set", "spec.workerGroupSpecs.0.replicas", "two", "replicas: 'two' is not of type 'integer'"),
    "rayVersion as a number": ("set", "spec.rayVersion", 2.6, "rayVersion: 2.6 is not of type 'string'"),
    "a misspelt field": ("set", "spec.workerGroupSpecs.0.maxReplica", 8, "'maxReplica' was unexpected"),
    "GPU limit as a list": (
        "set",
        "spec.workerGroupSpecs.0.template.spec.containers.0.resources.limits.nvidia.com/gpu",
        [1],
        "nvidia.com/gpu: [1] is not valid",
    ),
    "worker group without a name": (
        "drop",
        "spec.workerGroupSpecs.0.groupName",
        None,
        "'groupName' is a required property",
    ),
    "unknown auth mode": ("set", "spec.authOptions.mode", "password", "mode: 'password' is not one of"),
    "image as a number": (
        "set",
        "spec.headGroupSpec.template.spec.containers.0.image",
        42,
        "image: 42 is not of type 'string'",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_RAYCLUSTERS))
def test_crd_validation_catches_a_broken_raycluster(crds: dict[str, CRD], case: str) -> None:
    how, path, value, expected = BROKEN_RAYCLUSTERS[case]
    doc = raycluster()
    if path.endswith("nvidia.com/gpu"):  # the key holds dots: walk to the limits mapping first
        limits = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
        limits["nvidia.com/gpu"] = value
        broken = doc
    else:
        broken = _set(doc, path, value) if how == "set" else _drop(doc, path)
    errors = crds["RayCluster"].errors(broken)
    assert any(expected in e for e in errors), f"{case}: expected an error saying {expected!r}, got {errors}"


def test_crd_validation_catches_a_broken_rayjob(crds: dict[str, CRD]) -> None:
    job = rayjob_documents()["RayJob"]
    assert any(
        "shutdownAfterJobFinish" in e
        for e in crds["RayJob"].errors(
            _set(_drop(job, "spec.shutdownAfterJobFinishes"), "spec.shutdownAfterJobFinish", True)
        )
    )
    assert any(
        "ttlSecondsAfterFinished" in e for e in crds["RayJob"].errors(_set(job, "spec.ttlSecondsAfterFinished", "1h"))
    )
    assert any("apiVersion" in e for e in crds["RayJob"].errors(_set(job, "apiVersion", "ray.io/v9")))
    assert any("metadata.name" in e for e in crds["RayJob"].errors(_set(job, "metadata.name", "Qtrust_Job")))


# --------------------------------------------------------------------------------------------------
# What the manifests say


def ray_groups(spec: dict) -> Iterator[tuple[str, dict]]:
    yield "head", spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group


def container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    assert len(containers) == 1, "one Ray container per pod"
    return containers[0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def test_gpu_worker_groups_ask_kubernetes_for_gpus() -> None:
    spec = raycluster()["spec"]
    gpus = {}
    for name, group in ray_groups(spec):
        resources = container(group)["resources"]
        limit = resources.get("limits", {}).get("nvidia.com/gpu")
        if name == "head":
            assert limit is None, "the head runs the driver only: no GPU"
            continue
        assert limit is not None, f"{name}: no nvidia.com/gpu limit"
        # Extended resources: Kubernetes wants requests equal to limits.
        assert resources["requests"].get("nvidia.com/gpu") == limit, name
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert any(t.get("key") == "nvidia.com/gpu" for t in group["template"]["spec"].get("tolerations", []))
        gpus[name] = int(limit)
    assert sorted(gpus.values()) == [1, 8], gpus


def test_credentials_and_tracking_uri_come_from_a_secret() -> None:
    spec = raycluster()["spec"]
    for name, group in ray_groups(spec):
        env = env_of(container(group))
        for var in ("MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert var in env, f"{name}: {var} is not set"
            assert "value" not in env[var], f"{name}: {var} is written inline; take it from the Secret"
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "qtrust-credentials" and ref["key"], (name, var)
        assert env["QTRUST_VARIANT_CACHE"]["value"].startswith("s3://")
    for path in (RAYCLUSTER, RAYJOB, LAUNCHER, SWEEP):
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"{path}: an AWS access key id is written in it"
        assert not re.search(r"(?i)aws_secret_access_key\s*[=:]\s*[A-Za-z0-9/+]{20,}", text), path


def test_head_gets_benchmark_data_from_a_volume_not_the_image() -> None:
    head = raycluster()["spec"]["headGroupSpec"]
    pod = head["template"]["spec"]
    c = container(head)
    assert env_of(c)["QTRUST_DATA_DIR"]["value"] == "/data"
    assert {"name": "benchmarks", "mountPath": "/data"} in c["volumeMounts"]
    fetch = next(i for i in pod["initContainers"] if i["name"] == "fetch-benchmarks")
    assert fetch["command"][:3] == ["qtrust", "data", "fetch"] and "/data" in fetch["command"]
    assert any(v["name"] == "benchmarks" for v in pod["volumes"])
    assert pod["securityContext"]["runAsNonRoot"] is True


def sweep_volume(job_spec: dict) -> tuple[dict, dict]:
    head = job_spec["rayClusterSpec"]["headGroupSpec"]
    mounts = container(head)["volumeMounts"]
    volumes = head["template"]["spec"]["volumes"]
    volume = next(v for v in volumes if "configMap" in v)
    mount = next(m for m in mounts if m["name"] == volume["name"])
    return volume, mount


def test_rayjob_runs_the_configmap_sweep_on_the_raycluster_spec() -> None:
    docs = rayjob_documents()
    job, config_map = docs["RayJob"], docs["ConfigMap"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    namespaces = {d["metadata"].get("namespace") for d in (job, config_map, raycluster())}
    assert namespaces == {"qtrust"}, f"the manifests live in one namespace (with infra/mlflow's): {namespaces}"
    assert spec["ttlSecondsAfterFinished"] > 0
    volume, mount = sweep_volume(spec)
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (key,) = config_map["data"]
    words = shlex.split(spec["entrypoint"])
    assert words[:2] == ["qtrust", "run"], spec["entrypoint"]
    assert words[2] == f"{mount['mountPath']}/{key}", "the entrypoint must run the sweep the ConfigMap mounts"
    # The cluster is raycluster.yaml's, plus the sweep mount on the head.
    cluster = copy.deepcopy(spec["rayClusterSpec"])
    head = cluster["headGroupSpec"]
    container(head)["volumeMounts"].remove(mount)
    head["template"]["spec"]["volumes"].remove(volume)
    assert cluster == raycluster()["spec"], "rayjob.yaml's rayClusterSpec drifted from raycluster.yaml"


def test_rayjob_sweep_is_a_valid_sweep_and_the_one_in_infra_ray() -> None:
    from jobs.spec.load import parse_spec
    from jobs.spec.schema import SpecError

    text = next(iter(rayjob_documents()["ConfigMap"]["data"].values()))
    data = yaml.safe_load(text)
    assert data == yaml.safe_load(SWEEP.read_text()), "the ConfigMap's sweep differs from infra/ray/gpu-sweep.yaml"
    spec = parse_spec(copy.deepcopy(data), "rayjob.yaml ConfigMap")
    assert spec.resources.num_gpus >= 1
    assert spec.storage.root.startswith("s3://") and spec.storage.variant_cache.startswith("s3://")
    assert {m.engine for m in spec.models} == {"vllm"}
    # parse_spec is a real check: the same sweep with a broken recipe is refused.
    broken = copy.deepcopy(data)
    broken["recipes"][1]["bits"] = "eight"
    with pytest.raises(SpecError, match=r"recipes\[1\]"):
        parse_spec(broken, "broken")


def test_variant_cache_is_the_same_everywhere() -> None:
    cache = yaml.safe_load(SWEEP.read_text())["storage"]["variant_cache"]
    for name, group in ray_groups(raycluster()["spec"]):
        assert env_of(container(group))["QTRUST_VARIANT_CACHE"]["value"] == cache, name
    options = yaml.safe_load(LAUNCHER.read_text())["docker"]["run_options"]
    assert f"--env QTRUST_VARIANT_CACHE={cache}" in options


# --------------------------------------------------------------------------------------------------
# Ray cluster launcher


def prepared_launcher_config(config: dict) -> dict:
    """What `ray up` checks before it calls the cloud: defaults filled in, then Ray's schema and rules."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_ray_ships_its_launcher_schema() -> None:
    import ray.autoscaler

    assert (Path(ray.autoscaler.__file__).parent / "ray-schema.json").is_file()


def test_launcher_config_passes_rays_validation() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    assert config["provider"]["type"] in ("aws", "gcp")
    prepared = prepared_launcher_config(config)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpus = sorted(t["resources"].get("GPU", 0) for name, t in types.items() if name != prepared["head_node_type"])
    assert gpus == [1, 8]
    options = " ".join(config["docker"]["run_options"])
    assert "--env MLFLOW_TRACKING_URI=" in options and "--env QTRUST_VARIANT_CACHE=s3://" in options
    assert "AWS_SECRET_ACCESS_KEY" not in LAUNCHER.read_text() and "AWS_ACCESS_KEY_ID" not in LAUNCHER.read_text()
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])
    assert any("qtrust data fetch" in c for c in config["head_setup_commands"])


@pytest.mark.parametrize(
    "path, value",
    [
        ("available_node_types.gpu-1x.resources.GPU", "one"),
        ("docker.imagee", "x"),
        ("available_node_types.gpu-8x.max_workers", "1"),
        ("head_node_type", "no-such-type"),
    ],
)
def test_launcher_validation_catches_mistakes(path: str, value: Any) -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        prepared_launcher_config(_set(config, path, value))


# --------------------------------------------------------------------------------------------------
# One naming place for images


def images() -> dict[str, str]:
    values = {}
    for line in IMAGES_ENV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def manifest_images() -> list[tuple[str, str]]:
    found = []
    for path in (RAYCLUSTER, RAYJOB, LAUNCHER):
        for doc in yaml.safe_load_all(path.read_text()):
            found.extend((f"{path.name}:{where}", image) for where, image in _images_in(doc, ""))
    return found


def _images_in(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("image", "head_image", "worker_image") and isinstance(value, str):
                yield f"{where}.{key}", value
            else:
                yield from _images_in(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _images_in(value, f"{where}[{i}]")


def test_images_are_named_in_one_place_and_match_the_project_version() -> None:
    named = images()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert named["QTRUST_VERSION"] == version, "images.env: QTRUST_VERSION differs from pyproject.toml"
    base = f"{named['QTRUST_REGISTRY']}/{named['QTRUST_IMAGE_NAME']}"
    assert named["QTRUST_IMAGE_CPU"] == f"{base}:{version}-cpu"
    assert named["QTRUST_IMAGE_CUDA"] == f"{base}:{version}-cuda"
    build = (INFRA / "docker" / "build.sh").read_text()
    assert '"$QTRUST_IMAGE_CPU"' in build and '"$QTRUST_IMAGE_CUDA"' in build and "images.env" in build
    for flavour in ("cpu", "cuda"):
        assert (INFRA / "docker" / f"Dockerfile.{flavour}").is_file()


def test_every_manifest_image_is_one_infra_docker_builds() -> None:
    named = images()
    allowed = {named["QTRUST_IMAGE_CPU"], named["QTRUST_IMAGE_CUDA"]}
    found = manifest_images()
    assert len(found) >= 10, found  # raycluster (3 pods + init), rayjob (same), launcher (3 keys)
    stray = [(where, image) for where, image in found if image not in allowed]
    assert stray == [], f"images not named in infra/docker/images.env: {stray}"
    # Heads run the CPU image, GPU workers the CUDA image.
    for where, image in found:
        if "workerGroupSpecs" in where or where.endswith("worker_image"):
            assert image == named["QTRUST_IMAGE_CUDA"], where
        if "headGroupSpec" in where or where.endswith("head_image"):
            assert image == named["QTRUST_IMAGE_CPU"], where
