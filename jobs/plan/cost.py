"""What a sweep will cost before it runs (``qtrust plan``): items, tokens, memory, replicas, hours.

A dry run: no Ray, no model. Per variant × benchmark it counts the items still to compute (those
already in the sweep's store are left out), estimates prompt tokens from the rendered prompts
(characters / 4 plus a few tokens per chat turn) and output tokens from ``max_new_tokens`` (an upper
bound: generation may stop earlier), and prices them with a throughput table
(``cost_tables.yaml``; the user's ``--throughput`` file overrides it):

    hours = (prompt tokens / prefill rate + output tokens / decode rate) / 3600
    rate  = the device's rate for its reference model × reference params / the model's params

Memory per replica is the weights at the variant's bits plus the KV cache of one batch of sequences
of the mean length (at least the longest one); the replicas that fit are what the declared cluster (``--gpus 8xA100-80GB``,
``--gpus cpu:2``) or a running Ray cluster holds. Judges are priced the same way on their own
model. Quantizing a recipe adds its build time (``build_s_per_b``) once per variant.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from trust.yaml_safe import load_yaml_file

TABLES = Path(__file__).with_name("cost_tables.yaml")
CHARS_PER_TOKEN = 4.0
TOKENS_PER_TURN = 6
#: Bits per value of the dtypes a model runs in (16 for anything else).
_DTYPE_BITS = {"float32": 32.0, "bfloat16": 16.0, "float16": 16.0}
#: Judge prompts: the template's own text (criteria, instructions) beside the request and answer.
JUDGE_TEMPLATE_TOKENS = 350


class Device(BaseModel):
    """One device kind of the throughput table."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["gpu", "cpu"]
    memory_gb: float = Field(ge=0)
    prefill_tok_s: float = Field(gt=0)
    decode_tok_s: float = Field(gt=0)


class Architecture(BaseModel):
    """What the plan needs of a model: parameters and the KV cache's shape."""

    model_config = ConfigDict(extra="forbid")
    params_b: float = Field(gt=0)
    layers: int | None = Field(None, ge=1)
    kv_heads: int | None = Field(None, ge=1)
    head_dim: int | None = Field(None, ge=1)
    guessed: bool = False

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> float:
        if self.layers and self.kv_heads and self.head_dim:
            return 2.0 * self.layers * self.kv_heads * self.head_dim * bytes_per_value
        return 0.5e6 * self.params_b / 7.0  # a Llama-2-7B-like shape scaled by size


class CostTables(BaseModel):
    """The throughput, build-time and architecture tables (see cost_tables.yaml)."""

    model_config = ConfigDict(extra="forbid")
    reference_params_b: dict[Literal["gpu", "cpu"], float]
    devices: dict[str, Device]
    build_s_per_b: dict[Literal["gpu", "cpu"], dict[str, float]]
    models: dict[str, Architecture]


def load_tables(override: Path | None = None) -> CostTables:
    """The built-in tables, with ``override``'s entries replacing them key by key."""
    data = yaml.safe_load(TABLES.read_text(encoding="utf-8"))
    if override is not None:
        extra = load_yaml_file(override, f"--throughput {override}") or {}  # one line on bad input
        if not isinstance(extra, dict):
            raise ValueError(f"{override}: expected a mapping like jobs/plan/cost_tables.yaml")
        for section, entries in extra.items():
            if isinstance(entries, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **entries}
            else:
                data[section] = entries
    return CostTables.model_validate(data)


@dataclass
class Cluster:
    """What runs the sweep: ``count`` devices of one kind."""

    device_name: str
    device: Device
    count: int
    source: str

    @property
    def describe(self) -> str:
        unit = "core(s)" if self.device.kind == "cpu" else "GPU(s)"
        return f"{self.count} {unit} {self.device_name if self.device.kind == 'gpu' else ''} ({self.source})".replace(
            "  ", " "
        )


_CLUSTER = re.compile(r"^(?:(\d+)\s*[xX]\s*)?([A-Za-z0-9][A-Za-z0-9_.-]*)$")


def parse_cluster(text: str, tables: CostTables) -> Cluster:
    """``8xA100-80GB``, ``A40-48GB`` (one), ``cpu:2`` (two cores)."""
    if text.lower().startswith("cpu"):
        count = text.split(":", 1)[1] if ":" in text else "1"
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--gpus {text!r}: write cpu:N with N the number of cores")
        return Cluster("cpu", tables.devices["cpu"], int(count), "declared")
    found = _CLUSTER.match(text.strip())
    if not found or found.group(2) not in tables.devices:
        known = ", ".join(name for name, d in tables.devices.items() if d.kind == "gpu")
        raise ValueError(f"--gpus {text!r}: write NxTYPE with TYPE one of {known} (or add it with --throughput)")
    return Cluster(found.group(2), tables.devices[found.group(2)], int(found.group(1) or 1), "declared")


def cluster_from_ray(address: str, tables: CostTables, device_name: str | None) -> Cluster:
    """The GPUs (or, without any, the CPUs) of a running Ray cluster; ``device_name`` says which kind they are."""
    import ray

    if device_name is not None and device_name not in tables.devices:
        raise ValueError(f"--device {device_name!r}: one of {', '.join(tables.devices)} (or add it with --throughput)")
    if ray.is_initialized():  # already connected (a notebook, a test): read it as it is
        resources = ray.cluster_resources()
    else:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except Exception as err:  # no cluster there: one line, not a traceback
            raise ValueError(
                f"--address {address}: cannot connect to a Ray cluster there ({type(err).__name__})"
            ) from None
        try:
            resources = ray.cluster_resources()
        finally:
            ray.shutdown()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        name = device_name or "A100-80GB"
        return Cluster(name, tables.devices[name], gpus, f"Ray cluster at {address}")
    return Cluster("cpu", tables.devices["cpu"], max(1, int(resources.get("CPU", 1))), f"Ray cluster at {address}")


def architecture(source: str, tables: CostTables) -> Architecture:
    """The model's architecture: from the table, a local ``config.json``, or guessed from its name."""
    if source in tables.models:
        return tables.models[source]
    config = Path(source).expanduser() / "config.json"
    if config.is_file():
        return _from_config(json.loads(config.read_text(encoding="utf-8")), Path(source).expanduser())
    size = re.search(r"(\d+(?:\.\d+)?)\s*[bB](?![a-z])", source.split("/")[-1])
    if size:
        return Architecture(params_b=float(size.group(1)), guessed=True)
    return Architecture(params_b=7.0, guessed=True)


def _from_config(config: dict[str, Any], folder: Path) -> Architecture:
    hidden = int(config.get("hidden_size") or 0)
    heads = int(config.get("num_attention_heads") or 1)
    layers = int(config.get("num_hidden_layers") or 0) or None
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    dtype_bytes = _DTYPE_BITS.get(str(config.get("torch_dtype")), 16.0) / 8
    params = weights / dtype_bytes / 1e9 if weights else _params_from_shape(config)
    return Architecture(
        params_b=max(params, 1e-3),
        layers=layers,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or (hidden // heads if hidden else 0)) or None,
    )


def _params_from_shape(config: dict[str, Any]) -> float:
    hidden = int(config.get("hidden_size") or 0)
    inter = int(config.get("intermediate_size") or 4 * hidden)
    layers = int(config.get("num_hidden_layers") or 0)
    vocab = int(config.get("vocab_size") or 0)
    return (layers * (4 * hidden * hidden + 3 * hidden * inter) + 2 * vocab * hidden) / 1e9


_BITS_IN_NAME = re.compile(r"(?<![0-9.])([2348])[-_]?bit|int([2348])\b|\bw([2348])a\d", re.IGNORECASE)


def weight_bits(variant: Any) -> tuple[float, bool]:
    """Bits per weight of ``variant`` for memory: the recipe's, the checkpoint's, the dtype's for full
    precision; a prequantized checkpoint not read yet is guessed from its name (True: guessed)."""
    recipe = variant.recipe
    dtype_bits = _DTYPE_BITS.get(variant.model.dtype, 16.0)
    if not recipe.quant_method.quantizes and not recipe.quant_method.prequantized:
        return dtype_bits, False
    if recipe.bits is not None:
        return float(recipe.bits), False
    if variant.checkpoint_bits:
        return float(variant.checkpoint_bits), False
    name = f"{recipe.source or ''} {recipe.revision or ''}"
    named = _BITS_IN_NAME.search(name)
    if named:
        return float(next(g for g in named.groups() if g)), True
    if re.search(r"awq|gptq", name, re.IGNORECASE):
        return 4.0, True  # both are most often published at 4 bits
    return dtype_bits, True


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Prompt tokens estimated from the text: characters / 4 plus a few tokens per chat turn."""
    chars = sum(len(m.get("content") or "") for m in messages)
    return int(math.ceil(chars / CHARS_PER_TOKEN)) + TOKENS_PER_TURN * len(messages)


@dataclass
class Line:
    """One variant × benchmark (or judge × benchmark) of the plan."""

    variant: str
    benchmark: str
    task: str
    planned: int
    to_compute: int
    prompt_tokens: int
    output_tokens: int
    hours: float
    devices_per_replica: int
    memory_gb: float


@dataclass
class VariantCost:
    """One variant (or judge): its model, bits, memory, what fits, build time and its lines."""

    name: str
    source: str
    bits: float
    params_b: float
    guessed: bool
    memory_gb: float
    devices_per_replica: int
    replicas_fit: int
    build_hours: float
    lines: list[Line] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return self.build_hours + sum(line.hours for line in self.lines)

    @property
    def device_hours(self) -> float:
        return self.hours * self.devices_per_replica


@dataclass
class PlanCost:
    """The whole estimate."""

    cluster: Cluster
    variants: list[VariantCost]
    judges: list[VariantCost]
    notes: list[str] = field(default_factory=list)

    @property
    def device_hours(self) -> float:
        return sum(v.device_hours for v in self.variants + self.judges)

    @property
    def wall_hours(self) -> float:
        """A lower bound: every device busy all the time."""
        return self.device_hours / max(1, self.cluster.count)

    def as_dict(self) -> dict[str, Any]:
        def entry(v: VariantCost) -> dict[str, Any]:
            return {
                **{k: getattr(v, k) for k in ("name", "source", "bits", "params_b", "guessed", "memory_gb")},
                "devices_per_replica": v.devices_per_replica,
                "replicas_fit": v.replicas_fit,
                "build_hours": round(v.build_hours, 4),
                "hours": round(v.hours, 4),
                "device_hours": round(v.device_hours, 4),
                "lines": [line.__dict__ for line in v.lines],
            }

        return {
            "cluster": {"device": self.cluster.device_name, "count": self.cluster.count, "source": self.cluster.source},
            "device_hours": round(self.device_hours, 3),
            "wall_hours_lower_bound": round(self.wall_hours, 3),
            "variants": [entry(v) for v in self.variants],
            "judges": [entry(j) for j in self.judges],
            "notes": self.notes,
        }


def _rate(tables: CostTables, cluster: Cluster, params_b: float, devices: int) -> tuple[float, float]:
    """(prefill, decode) tokens/s of one replica of a ``params_b`` model over ``devices`` devices."""
    scale = tables.reference_params_b[cluster.device.kind] / params_b * devices
    return cluster.device.prefill_tok_s * scale, cluster.device.decode_tok_s * scale


def _fit(cluster: Cluster, weights_gb: float, kv_gb: float, cpus_per_replica: float) -> tuple[float, int, int]:
    """(memory per replica, devices per replica, replicas the cluster holds at once)."""
    memory = weights_gb + kv_gb + 1.0  # + runtime (CUDA context, activations)
    if cluster.device.kind == "cpu":
        per_replica = max(1, int(round(cpus_per_replica)) or 1)
        return memory, per_replica, max(1, cluster.count // per_replica)
    usable = cluster.device.memory_gb * 0.9
    devices = max(1, math.ceil(memory / usable))
    devices = 1 << (devices - 1).bit_length()  # tensor parallelism over 1, 2, 4, 8 devices
    per_device = max(1, int(usable // memory)) if devices == 1 else 1
    return memory, devices, max(0, cluster.count // devices) * per_device


def estimate(plan: Any, stored: set[str], tables: CostTables, cluster: Cluster) -> PlanCost:
    """Price ``plan`` (a :class:`jobs.plan.build.Plan`) on ``cluster``; ``stored``: item keys already computed."""
    spec = plan.spec
    result = PlanCost(cluster=cluster, variants=[], judges=[])
    batch = spec.generation.batch_size
    shapes: dict[str, tuple[list[int], list[int]]] = {}  # benchmark -> (prompt tokens, extra option tokens) per item
    for name, run in plan.benchmarks.items():
        prompts = [prompt_tokens(item.messages) for item in run.items]
        options = [
            sum(prompt_tokens([{"content": c}]) - TOKENS_PER_TURN for c in item.choices or []) for item in run.items
        ]
        shapes[name] = (prompts, options)
    kinds = cluster.device.kind
    for variant in plan.variants.values():
        arch = architecture(variant.model.source, tables)
        bits, bits_guessed = weight_bits(variant)
        if bits_guessed:
            result.notes.append(f"{variant.name}: {bits:g} bits per weight read from the checkpoint's name")
        kv_gb = arch.kv_bytes_per_token() * _batch_tokens(plan, shapes, batch) / 1e9
        weights_gb = arch.params_b * bits / 8
        memory, devices, fit = _fit(cluster, weights_gb, kv_gb, variant.resources.num_cpus)
        method = variant.recipe.method
        build_s = tables.build_s_per_b[kinds].get(method, 0.0) * arch.params_b / devices
        cost = VariantCost(
            name=variant.name,
            source=variant.model.source,
            bits=bits,
            params_b=arch.params_b,
            guessed=arch.guessed,
            memory_gb=round(memory, 2),
            devices_per_replica=devices,
            replicas_fit=fit,
            build_hours=build_s / 3600,
        )
        prefill, decode = _rate(tables, cluster, arch.params_b, devices)
        for bench, run in plan.benchmarks.items():
            keys = plan.keys.get((variant.name, bench))
            if keys is None:
                continue
            prompts, options = shapes[bench]
            todo = [i for i, key in enumerate(keys) if key not in stored]
            p_tokens = sum(prompts[i] + options[i] for i in todo)
            o_tokens = 0 if run.benchmark.task == "loglikelihood" else run.max_new_tokens * len(todo)
            hours = (p_tokens / prefill + o_tokens / decode) / 3600
            cost.lines.append(
                Line(
                    variant.name,
                    bench,
                    run.benchmark.task,
                    len(keys),
                    len(todo),
                    p_tokens,
                    o_tokens,
                    hours,
                    devices,
                    cost.memory_gb,
                )
            )
        result.variants.append(cost)
        if arch.guessed:
            result.notes.append(
                f"{variant.model.source}: architecture not known; sized from its name (add it with --throughput)"
            )
    result.judges = _judges(plan, stored, tables, cluster, shapes, batch)
    return result


def _batch_tokens(plan: Any, shapes: dict[str, tuple[list[int], list[int]]], batch: int) -> float:
    """Tokens a replica's KV cache holds: a batch of sequences of the mean length (engines page the cache
    and schedule what fits, so a long prompt does not reserve its length for the whole batch), and at
    least the longest single sequence."""
    lengths = [
        p + o + plan.benchmarks[name].max_new_tokens
        for name, (prompts, options) in shapes.items()
        for p, o in zip(prompts, options)
    ]
    if not lengths:
        return 0.0
    return max(max(lengths), batch * sum(lengths) / len(lengths))


def _judges(
    plan: Any, stored: set[str], tables: CostTables, cluster: Cluster, shapes: dict, batch: int
) -> list[VariantCost]:
    """Model judges: every answer of the benchmarks a judge reads, judged once (stored answers count too:
    their judgments may be missing; the plan does not read the judgment store)."""
    out = []
    for judge in plan.judges.values():
        if judge.spec.kind != "model" or not judge.spec.model:
            continue
        arch = architecture(judge.spec.model, tables)
        bits = _DTYPE_BITS.get(judge.spec.dtype, 16.0)
        answers = 0
        p_tokens = o_tokens = 0
        for bench in judge.benchmarks:
            run = plan.benchmarks[bench]
            prompts, _ = shapes[bench]
            n_variants = sum(1 for (v, b) in plan.keys if b == bench)
            answers += n_variants * len(prompts)
            p_tokens += n_variants * sum(p + run.max_new_tokens + JUDGE_TEMPLATE_TOKENS for p in prompts)
            o_tokens += n_variants * len(prompts) * judge.max_new_tokens(bench)
        judged = {b: shapes[b] for b in judge.benchmarks}
        tokens = _batch_tokens(plan, judged, judge.spec.batch_size) + JUDGE_TEMPLATE_TOKENS * judge.spec.batch_size
        kv_gb = arch.kv_bytes_per_token() * tokens / 1e9
        num_cpus = judge.resources.num_cpus
        memory, devices, fit = _fit(cluster, arch.params_b * bits / 8, kv_gb, num_cpus)
        prefill, decode = _rate(tables, cluster, arch.params_b, devices)
        cost = VariantCost(
            judge.name, judge.spec.model, bits, arch.params_b, arch.guessed, round(memory, 2), devices, fit, 0.0
        )
        cost.lines.append(
            Line(
                judge.name,
                ",".join(judge.benchmarks),
                "judge",
                answers,
                answers,
                p_tokens,
                o_tokens,
                (p_tokens / prefill + o_tokens / decode) / 3600,
                devices,
                cost.memory_gb,
            )
        )
        out.append(cost)
    return out
