"""Checkpoints that are already quantized: what they hold, and how transformers loads them.

:func:`inspect_checkpoint` reads a folder's ``config.json`` ``quantization_config`` (or the
header of the single ``*.gguf`` file in the folder) without loading any weights, so the planner
can order variants by bits. :func:`prequantized_model_kwargs` gives the extra
``from_pretrained`` arguments each format needs, and :func:`load_prequantized` loads the model,
turning a missing backend package into a :class:`QuantizationError` that says what to install.

Mixed compressed-tensors configs (several ``config_groups`` with different weight settings)
report the bits and group size of the group with the **most** bits (ties: the first such group):
the checkpoint is then ordered by its most precise layers, which never makes a mixed variant
look less precise than it is. ``fmt`` is the top-level ``format`` (``mixed-precision`` when the
groups disagree).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cluster.quantization.loading import VLLMWeights, folder_size_bytes
from cluster.quantization.methods import VLLM_CHECKPOINT_FORMATS  # noqa: F401 - re-exported
from cluster.quantization.targets import QuantizationError

if TYPE_CHECKING:
    from cluster.quantization.loading import LoadRequest, TransformersLoader
    from cluster.quantization.recipes import QuantRecipe

#: Package to install for each ``quant_method`` that transformers loads through an extra package.
BACKEND_PACKAGES: dict[str, str] = {
    "gptq": "gptqmodel optimum",
    "awq": "gptqmodel",
    "bitsandbytes": "bitsandbytes",
    "compressed-tensors": "compressed-tensors",
    "gguf": "gguf",
    "hqq": "hqq",
    "aqlm": "'aqlm[cpu]'",
}
#: Formats vLLM does not load, and what to say instead of "vLLM loads them natively".
_NO_VLLM = {"aqlm": "vLLM does not serve AQLM checkpoints (it dropped them)"}

#: Published QuIP# checkpoints (relaxml on the hub) are refused with this line.
QUIP_SHARP_REFUSAL = (
    "QuIP# checkpoints need the quip-sharp CUDA kernels, which no maintained package provides; "
    "build quip_sharp variants with qtrust instead (method: quip_sharp)"
)

_NO_CONFIG = "use method: none to load it unquantized, or a recipe such as gptq to quantize it"


@dataclass(frozen=True)
class PrequantizedInfo:
    """What a quantized checkpoint holds.

    ``method``: ``awq``, ``gptq``, ``compressed-tensors``, ``bitsandbytes``, ``gguf`` or another
    ``quant_method`` string. ``bits``/``group_size``: weight bits and input features per scale
    (None when the config does not say, or one scale per row). ``fmt``: the storage format, e.g.
    ``pack-quantized``, ``gemm``, ``nf4``, ``Q4_1``. ``file``: the GGUF file name, if any.
    """

    method: str
    bits: int | None
    group_size: int | None
    fmt: str
    file: str | None = None

    def describe(self) -> dict[str, str]:
        """Flat string description for run records."""
        out = {
            "prequantized_method": self.method,
            "prequantized_bits": "unknown" if self.bits is None else str(self.bits),
            "prequantized_group_size": "per-channel" if self.group_size is None else str(self.group_size),
            "prequantized_format": self.fmt,
        }
        if self.file:
            out["prequantized_file"] = self.file
        return out


# -------------------------------------------------------------------------- config.json


def _as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _compressed_tensors_info(config: dict[str, Any]) -> PrequantizedInfo:
    """Bits, group size and format of a compressed-tensors config (see the module docstring)."""
    groups = [g for g in (config.get("config_groups") or {}).values() if isinstance(g, dict)]
    weights = [g.get("weights") for g in groups if isinstance(g.get("weights"), dict)]
    settings = [(_as_int(w.get("num_bits")), _as_int(w.get("group_size"))) for w in weights]
    fmt = config.get("format")
    if not fmt:
        formats = {g.get("format") for g in groups if g.get("format")}
        fmt = formats.pop() if len(formats) == 1 else "mixed-precision" if formats else "unknown"
    if not settings:
        return PrequantizedInfo("compressed-tensors", None, None, str(fmt))
    bits, group = max(settings, key=lambda s: s[0] or 0)
    return PrequantizedInfo("compressed-tensors", bits, group, str(fmt))


def _aqlm_info(config: dict[str, Any]) -> PrequantizedInfo:
    """AQLM: nominal bits = codebooks · bits per code / group area; format like ``2x8-1x8`` (codebooks, group)."""
    codebooks, nbits = _as_int(config.get("num_codebooks")), _as_int(config.get("nbits_per_codebook"))
    in_group, out_group = _as_int(config.get("in_group_size")), _as_int(config.get("out_group_size")) or 1
    if not (codebooks and nbits and in_group):
        return PrequantizedInfo("aqlm", None, None, "unknown")
    bits = max(1, round(codebooks * nbits / (in_group * out_group)))
    return PrequantizedInfo("aqlm", bits, None, f"{codebooks}x{nbits}-{out_group}x{in_group}")


def _bnb_info(config: dict[str, Any]) -> PrequantizedInfo:
    if config.get("load_in_4bit"):
        return PrequantizedInfo("bitsandbytes", 4, None, str(config.get("bnb_4bit_quant_type") or "fp4"))
    if config.get("load_in_8bit"):
        return PrequantizedInfo("bitsandbytes", 8, None, "int8")
    return PrequantizedInfo("bitsandbytes", None, None, "unknown")


def _generic_info(method: str, config: dict[str, Any]) -> PrequantizedInfo:
    """awq, gptq and other methods that write ``bits``/``group_size`` (-1: per channel)."""
    bits = _as_int(config.get("bits", config.get("w_bit")))
    group = _as_int(config.get("group_size", config.get("q_group_size")))
    fmt = config.get("version") or config.get("checkpoint_format") or config.get("format") or method
    return PrequantizedInfo(method, bits, group, str(fmt).lower())


#: Readers of the ``quantization_config`` formats that do not write ``bits``/``group_size``.
_CONFIG_READERS = {"compressed-tensors": _compressed_tensors_info, "bitsandbytes": _bnb_info, "aqlm": _aqlm_info}


def info_from_quantization_config(config: dict[str, Any]) -> PrequantizedInfo:
    """Interpret a ``quantization_config`` dictionary from ``config.json``."""
    quant_method = str(config.get("quant_method") or "unknown").lower()
    reader = _CONFIG_READERS.get(quant_method)
    return reader(config) if reader is not None else _generic_info(quant_method, config)


# --------------------------------------------------------------------------------- GGUF

# GGUF metadata value types (gguf spec): fixed sizes in bytes; 8 = string, 9 = array.
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4


def _read(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _skip_gguf_value(stream: BinaryIO, kind: int) -> None:
    if kind in _GGUF_SIZES:
        stream.seek(_GGUF_SIZES[kind], 1)
    elif kind == _GGUF_STRING:
        stream.seek(_read(stream, "<Q"), 1)
    elif kind == _GGUF_ARRAY:
        item, count = _read(stream, "<I"), _read(stream, "<Q")
        if item in _GGUF_SIZES:
            stream.seek(_GGUF_SIZES[item] * count, 1)
        else:
            for _ in range(count):
                _skip_gguf_value(stream, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def gguf_file_type(path: Path) -> int | None:
    """``general.file_type`` from a GGUF header (v2/v3), reading only up to that key.

    Much faster than ``gguf.GGUFReader``, which parses the whole tokenizer vocabulary first.
    Returns None when the key is absent or the header cannot be read.
    """
    try:
        with open(path, "rb") as stream:
            if stream.read(4) != b"GGUF" or _read(stream, "<I") < 2:
                return None
            _read(stream, "<Q")  # tensor count
            for _ in range(_read(stream, "<Q")):
                key = stream.read(_read(stream, "<Q")).decode("utf-8", "replace")
                kind = _read(stream, "<I")
                if key == "general.file_type" and kind == _GGUF_UINT32:
                    return int(_read(stream, "<I"))
                _skip_gguf_value(stream, kind)
    except (OSError, EOFError, ValueError, struct.error):
        return None
    return None


def _dominant_tensor_type(path: Path) -> str:
    """The most common type among the GGUF's 2-D tensors (slow fallback: full reader)."""
    from collections import Counter

    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    counts = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)
    return counts.most_common(1)[0][0] if counts else "unknown"


def gguf_type_name(path: Path) -> str:
    """The GGUF quantization type, such as ``Q4_1`` or ``Q4_K_M`` (``F16`` when unquantized)."""
    import gguf

    code = gguf_file_type(path)
    if code is not None:
        try:
            return gguf.LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    return _dominant_tensor_type(path)


def _gguf_info(path: Path) -> PrequantizedInfo:
    """Bits from the type name (first number: ``Q4_K_M`` → 4, ``F16`` → 16), block size as group."""
    fmt = gguf_type_name(path)
    number = re.search(r"(\d+)", fmt)
    bits = int(number.group(1)) if number else None
    return PrequantizedInfo("gguf", bits, _gguf_block_size(fmt), fmt, file=path.name)


def _gguf_block_size(fmt: str) -> int | None:
    """Weights per block of a GGUF type (``Q4_K_M`` → ``Q4_K`` → 256); None when unblocked."""
    import gguf

    base = re.sub(r"_[SML]$", "", fmt)
    if base not in gguf.GGMLQuantizationType.__members__:
        return None
    block, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[base]]
    return block if block > 1 else None


# ----------------------------------------------------------------------------- public API


def inspect_checkpoint(path: Path) -> PrequantizedInfo:
    """What the quantized checkpoint in folder ``path`` holds (no weights are loaded).

    Reads ``config.json``'s ``quantization_config``; a folder without ``config.json`` that holds
    exactly one ``*.gguf`` file is read as GGUF.

    Raises:
        QuantizationError: the folder holds no quantization config (or several GGUF files).
    """
    path = Path(path)
    config_file = path / "config.json"
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except ValueError as exc:
            raise QuantizationError(f"{config_file} is not valid JSON ({exc})") from None
        quant = config.get("quantization_config")
        if "quip_params" in config or (
            isinstance(quant, dict) and "quip" in str(quant.get("quant_method", "")).lower()
        ):
            raise QuantizationError(f"{path} is a QuIP# checkpoint: {QUIP_SHARP_REFUSAL}")
        if isinstance(quant, dict) and quant:
            return info_from_quantization_config(quant)
    if len(ggufs) == 1:
        return _gguf_info(ggufs[0])
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs)
        raise QuantizationError(
            f"{path} holds several GGUF files ({names}); put the one to load in a folder of its own"
        )
    raise QuantizationError(
        f"{path} holds no quantized checkpoint (no quantization_config in config.json); {_NO_CONFIG}"
    )


def _compressed_tensors_kwargs(info: PrequantizedInfo, path: Path, device: str) -> dict[str, Any]:
    if str(device).startswith("cuda"):
        return {}
    from transformers import CompressedTensorsConfig

    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}


def _aqlm_kwargs(info: PrequantizedInfo, path: Path, device: str) -> dict[str, Any]:
    """aqlm: the checkpoint's config, with ``linear_weights_not_to_quantize`` also as module names.

    The aqlm authors' checkpoints list parameter names (``lm_head.weight``); Transformers 5 matches
    module names (``lm_head``), so without this it replaces the head by an empty quantized layer.
    Also runs aqlm's CPU kernel serially (see :func:`cluster.quantization.aqlm.serial_numba_kernel`).
    """
    from transformers import AutoConfig

    from cluster.quantization.aqlm import require_aqlm, serial_numba_kernel

    require_aqlm()
    serial_numba_kernel()
    config = AutoConfig.from_pretrained(str(path))
    quant = dict(getattr(config, "quantization_config", None) or {})
    names = [str(n) for n in quant.get("linear_weights_not_to_quantize") or []]
    quant["linear_weights_not_to_quantize"] = list(dict.fromkeys([n.removesuffix(".weight") for n in names] + names))
    config.quantization_config = quant
    return {"config": config}


def _gguf_kwargs(info: PrequantizedInfo, path: Path, device: str) -> dict[str, Any]:
    from transformers import GgufConfig

    name = info.file or _single_gguf(Path(path)).name
    return {"gguf_file": name, "quantization_config": GgufConfig(dequantize=True)}


#: ``from_pretrained`` arguments of the formats that need some (the others follow their config).
_MODEL_KWARGS = {"compressed-tensors": _compressed_tensors_kwargs, "gguf": _gguf_kwargs, "aqlm": _aqlm_kwargs}
#: Formats transformers loads onto a GPU only with an explicit ``device_map``.
_DEVICE_MAP_FORMATS = frozenset({"bitsandbytes", "gptq", "awq"})
#: Formats vLLM loads packed: native WNA16 kernels, or a dense copy where this build has none.
_VLLM_PACKED_FORMATS = frozenset({"compressed-tensors"})


def prequantized_model_kwargs(info: PrequantizedInfo, path: Path, *, device: str) -> dict[str, Any]:
    """Extra ``AutoModelForCausalLM.from_pretrained`` arguments for a prequantized checkpoint.

    * compressed-tensors on CPU: dequantize to dense weights at load (the packed kernels need a
      GPU); on CUDA, nothing (transformers runs the checkpoint's own config).
    * gguf: the file name and ``GgufConfig(dequantize=True)`` (transformers always dequantizes).
    * aqlm: the checkpoint's config with its kept layers also named as modules (needs ``aqlm``).
    * awq, gptq, bitsandbytes and others: nothing; transformers follows the checkpoint config.
    """
    kwargs = _MODEL_KWARGS.get(info.method)
    return kwargs(info, path, device) if kwargs is not None else {}


def prequantized_tokenizer_kwargs(info: PrequantizedInfo) -> dict[str, Any]:
    """Extra ``AutoTokenizer.from_pretrained`` arguments (GGUF files carry their tokenizer)."""
    return {"gguf_file": info.file} if info.file else {}  # only GGUF checkpoints name a file


def _single_gguf(path: Path) -> Path:
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) != 1:
        raise QuantizationError(f"{path} must hold exactly one GGUF file (found {len(ggufs)})")
    return ggufs[0]


def _check_aqlm_dtype(info: PrequantizedInfo, path: Path, dtype: str, device: str) -> None:
    """aqlm on CPU: its numba kernel runs float32 only (raise :class:`QuantizationError` otherwise)."""
    if info.method == "aqlm":
        from cluster.quantization.aqlm import checkpoint_settings, cpu_dtype_problem

        problem = cpu_dtype_problem(checkpoint_settings(path), dtype, device)
        if problem:
            raise QuantizationError(problem)


def missing_backend_error(info: PrequantizedInfo, exc: ImportError) -> QuantizationError:
    """A :class:`QuantizationError` for a checkpoint whose backend package is not installed."""
    package = BACKEND_PACKAGES.get(info.method, f"the package for quant_method {info.method!r}")
    vllm = _NO_VLLM.get(info.method, f"vLLM loads {info.method} checkpoints natively (engine: vllm)")
    return QuantizationError(
        f"loading this {info.method} checkpoint with transformers needs {package} (pip install {package}); "
        f"transformers said: {exc}. {vllm}."
    )


def load_prequantized(
    path: Path,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> tuple[Any, Any, dict[str, str]]:
    """Load a prequantized checkpoint with transformers: ``(model, tokenizer, description)``.

    Raises:
        QuantizationError: the folder is not quantized (see :func:`inspect_checkpoint`), or the
            backend package transformers needs for it is not installed.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cluster.models.dtype import parse_dtype

    path = Path(path)
    info = inspect_checkpoint(path)
    _check_aqlm_dtype(info, path, dtype, device)
    kwargs = prequantized_model_kwargs(info, path, device=device)
    if str(device).startswith("cuda") and info.method in _DEVICE_MAP_FORMATS:
        kwargs["device_map"] = {"": device}
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, **prequantized_tokenizer_kwargs(info)
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=parse_dtype(dtype), trust_remote_code=trust_remote_code, **kwargs
        )
    except ImportError as exc:
        raise missing_backend_error(info, exc) from exc
    model.eval()
    return model, tokenizer, info.describe()


# ------------------------------------------------------------------ the method table's loaders


def inspect_for_recipe(path: Path, recipe: QuantRecipe) -> PrequantizedInfo:
    """:func:`inspect_checkpoint`, with the recipe's ``bits`` checked against the checkpoint's.

    Raises:
        ValueError: the bits differ (or see :func:`inspect_checkpoint`).
    """
    info = inspect_checkpoint(path)
    if recipe.bits is not None and info.bits is not None and recipe.bits != info.bits:
        raise ValueError(f"recipe says {recipe.bits} bits but the checkpoint at {path} holds {info.bits}-bit weights")
    return info


def _checkpoint_report(info: PrequantizedInfo, path: Path) -> dict[str, Any]:
    report: dict[str, Any] = {f"checkpoint_{k}": v for k, v in info.describe().items()}
    report["size_bytes"] = folder_size_bytes(path)
    return report


def load_prequantized_variant(request: LoadRequest, hf: TransformersLoader) -> tuple[Any, dict[str, Any]]:
    """``prequantized``: the checkpoint as transformers loads its format, as an engine; and its report."""
    path = request.prequantized_path or request.path
    info = inspect_for_recipe(path, request.recipe)
    _check_aqlm_dtype(info, path, request.dtype, request.device)
    kwargs = prequantized_model_kwargs(info, path, device=request.device)
    engine = hf.from_pretrained(path, kwargs)
    return engine, _checkpoint_report(info, path)


def prequantized_vllm_weights(request: LoadRequest) -> VLLMWeights:
    """``prequantized``: the folder vLLM loads (formats it does not serve are refused).

    Raises:
        ValueError: vLLM does not serve the checkpoint's format in qtrust.
    """
    path = request.prequantized_path or request.path
    info = inspect_for_recipe(path, request.recipe)
    if info.method in _NO_VLLM:
        raise ValueError(
            f"engine vllm: the checkpoint at {path} is {info.method}; {_NO_VLLM[info.method]}; "
            f"use engine: hf (pip install {BACKEND_PACKAGES[info.method]})"
        )
    problem = request.recipe.quant_method.vllm_problem(info.method)
    if problem:
        raise ValueError(f"engine vllm: {problem}")
    packed = info.method in _VLLM_PACKED_FORMATS
    return VLLMWeights(
        path, _checkpoint_report(info, path), packed=packed, native_format=None if packed else info.method
    )
