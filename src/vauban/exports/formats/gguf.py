"""One ``.gguf`` file for llama.cpp, Ollama and LM Studio.

**From a GGUF source** (a ``.gguf`` the model was loaded from, or the demo model) the file is
patched rather than rebuilt: its header, metadata, vocabulary and every tensor the cut does not
touch are copied byte for byte; each edited matrix (attention output, MLP down projection, and
the embeddings with ``embeddings=True``) is dequantized from the source file itself, cut with
the same arithmetic as :func:`vauban.edit.cutting.edited` (the cut's own basis and strength per
tensor, :meth:`~vauban.edit.cutting.Cut.tensor_edits`), and quantized again to its own type (a
Q4_K_M file mixes Q4_K, Q6_K, Q5_0 and Q8_0 tensors) with llama.cpp's quantizer
(``llama-cpp-python``'s bundled ggml) or, for the types it implements, the ``gguf`` package's.
``quant`` picks one type for every edited tensor instead (``q8_0`` keeps the cut more exactly
than a 4-bit grid). The file keeps the source's size, up to the edited tensors' new types.

**From any other source** the cut model goes through llama.cpp's own tools: its converter
(``convert_hf_to_gguf.py``, see :mod:`vauban.exports.formats.llamacpp` for where it comes from) writes
``f32``/``f16``/``bf16``/``q8_0`` (the source's dtype unless ``quant`` says otherwise), and
llama.cpp's quantizer (``llama_model_quantize``) makes any other type (``q4_k_m``, ``q5_k_m``,
``q6_k``, ...) from it. The vocabulary is converted by llama.cpp, never by hand.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.errors import VaubanError
from ...edit.cutting import TensorEdit, active_cuts, redo
from ...model.demo import assemble_demo_gguf
from ...model.loading import ModelSource, cache_dir, check_gguf
from . import llamacpp
from .base import DTYPE_NAMES, ExportJob, need, save_transformers

NAME = "gguf"
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")  # what convert_hf_to_gguf.py writes itself
_FLOAT_OUT = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def write(job: ExportJob, folder: Path) -> dict[str, Any]:
    with source_gguf(job.source) as source:
        if source is not None:
            return patch(job, source, folder)
    return convert(job, folder)


@contextlib.contextmanager
def source_gguf(source: ModelSource | None) -> Iterator[Path | None]:
    """The GGUF file the model was loaded from, if it was (the demo's is reassembled for the
    length of the export from its packages, checked against its sha256)."""
    if source is None:
        yield None
    elif source.kind == "demo":
        base = cache_dir() / "demo"
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=base, prefix=".export-") as tmp:
            path = Path(tmp) / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
            assemble_demo_gguf(path)
            yield path
    elif source.kind.removeprefix("hub/") == "gguf" and source.origin and Path(source.origin).is_file():
        yield Path(source.origin)
    else:
        yield None


# --- patching a GGUF source ------------------------------------------------------------------


def patch(job: ExportJob, source: Path, folder: Path) -> dict[str, Any]:
    """Copy ``source`` with the cut's tensors replaced (see the module docstring)."""
    gguf = need("gguf", "gguf")

    check_gguf(source)
    reader = gguf.GGUFReader(source)
    cuts = active_cuts(job.model)
    if len(cuts) > 1:
        raise VaubanError(
            f"a GGUF export redoes the model's cut, so one cut may be applied (found {len(cuts)})"
        )
    edits = cuts[0].tensor_edits() if cuts else []
    forced = parse_tensor_type(job.quant) if job.quant is not None else None
    replaced: dict[str, tuple[int, bytes]] = {}
    types: Counter[str] = Counter()
    params = dict(job.model.named_parameters())
    with llamacpp.child("quantizing the edited tensors") as child:  # started only if used
        for edit, tensor in _gguf_tensors(reader, edits, tied=_tied_head(job.model)):
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            original = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
            if tuple(original.shape) != tuple(params[edit.name].shape):
                raise VaubanError(
                    f"GGUF tensor {tensor.name} has shape {tuple(original.shape)} but "
                    f"{edit.name} has {tuple(params[edit.name].shape)}; this GGUF's layout "
                    "is not supported for patching: export --format safetensors"
                )
            new = redo(original, edit)
            qtype = forced if forced is not None else gguf.GGMLQuantizationType(int(tensor.tensor_type))
            replaced[tensor.name] = (int(qtype), quantize(new.numpy(), qtype, tensor.name, child))
            types[qtype.name] += 1
    label = forced.name if forced is not None else _file_type_label(reader)
    out = folder / f"{job.name}-{label}.gguf"
    write_patched(reader, source, replaced, out)
    source_type = _file_type_label(reader)
    how = "own types" if forced is None else forced.name
    return {
        "dtype": None,
        "quantization": f"{source_type} source, edited tensors re-quantized to {how} "
        f"({', '.join(f'{k} ×{v}' for k, v in sorted(types.items()))})"
        if types
        else source_type,
        "gguf_file": out.name,
        "gguf_source": "demo" if job.source and job.source.kind == "demo" else str(source),
        "bytes": out.stat().st_size,
        "source_bytes": source.stat().st_size,
        "edited_tensor_types": dict(types),
    }


def _tied_head(model: Any) -> str | None:
    """The input embedding's parameter name when the output head shares it."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if head is None or emb is None or head.weight is not emb.weight:
        return None
    return next((n for n, p in model.named_parameters() if p is emb.weight), None)


def _gguf_tensors(reader: Any, edits: list[TensorEdit], tied: str | None) -> list[tuple[TensorEdit, Any]]:
    """The GGUF tensor behind each edited parameter, found through gguf-py's name map. A model
    whose head shares the embedding (edited by ``embeddings=True``) may still ship a separate
    ``output.weight`` in its GGUF, which llama.cpp uses: it gets the embedding's edit too."""
    import gguf

    arch_name = reader.fields["general.architecture"].contents()
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(arch_name)
    blocks = reader.fields.get(f"{arch_name}.block_count")
    if arch is None or blocks is None:
        raise VaubanError(
            f"GGUF architecture {arch_name!r} is unknown to the gguf package; export --format safetensors"
        )
    names = gguf.get_tensor_name_map(arch, int(blocks.contents()))
    by_name = {t.name: t for t in reader.tensors}
    out = []
    for edit in edits:
        name = names.get_name(edit.name, try_suffixes=(".weight", ".bias"))
        if name is not None and name not in by_name and f"{name}.weight" in by_name:
            name += ".weight"  # a fused expert parameter has no suffix; its GGUF tensor has one
        if name is None or name not in by_name:
            raise VaubanError(
                f"no GGUF tensor for {edit.name} ({name or 'no mapping'}); export --format safetensors"
            )
        out.append((edit, by_name[name]))
        if edit.name == tied and "output.weight" in by_name:
            out.append((edit, by_name["output.weight"]))
    return out


def _file_type_label(reader: Any) -> str:
    import gguf

    field = reader.fields.get("general.file_type")
    if field is None:
        return "GGUF"
    try:
        return gguf.LlamaFileType(int(field.contents())).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"type{int(field.contents())}"


def parse_tensor_type(quant: str) -> Any:
    import gguf

    try:
        return gguf.GGMLQuantizationType[quant.upper()]
    except KeyError:
        known = "q8_0, q6_k, q5_k, q4_k, q5_0, q4_0, f16, bf16, f32"
        raise VaubanError(
            f"{quant!r} is not a GGUF tensor type; from a GGUF source --quant names the "
            f"edited tensors' type, e.g. {known}"
        ) from None


def check_quant(quant: str) -> None:
    """A GGML tensor type (``q8_0``, ``q4_k``: a GGUF source's edited tensors) or a llama.cpp
    file type (``q4_k_m``: converting any other source)."""
    import gguf

    key = quant.upper()
    if (
        key in gguf.GGMLQuantizationType.__members__
        or f"MOSTLY_{key}" in gguf.LlamaFileType.__members__
        or f"ALL_{key}" in gguf.LlamaFileType.__members__
    ):
        return
    raise VaubanError(f"{quant!r} is not a GGUF type; e.g. q8_0, q6_k, q4_k_m, q5_k_m, f16, bf16")


def quantize(values: np.ndarray, qtype: Any, name: str, child: llamacpp.Child | None = None) -> bytes:
    """``values`` (float32, rows × n) in GGML type ``qtype``: llama.cpp's quantizer (in ``child``,
    see :func:`llamacpp.quantize_rows`) when llama-cpp-python is installed, else the ``gguf``
    package's for the types it implements."""
    import gguf

    values = np.ascontiguousarray(values, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return values.tobytes()
    if qtype == gguf.GGMLQuantizationType.F16:
        return values.astype(np.float16).tobytes()
    if llamacpp.available():
        return llamacpp.quantize_rows(values, int(qtype), child)
    try:
        return gguf.quants.quantize(values, qtype).tobytes()
    except NotImplementedError:
        raise VaubanError(
            f"{name} is {qtype.name}, which only llama.cpp's quantizer writes: install it "
            "with pip install 'vauban[llamacpp]', or pass --quant q8_0"
        ) from None


def write_patched(reader: Any, source: Path, replaced: dict[str, tuple[int, bytes]], out: Path) -> None:
    """Write ``source`` to ``out`` with the tensors in ``replaced`` (name → (type, data)).

    The header and metadata bytes are copied as they are; each tensor-info record is copied
    with only its type and data offset rewritten; tensor data keeps its order and alignment.
    """
    tensors = list(reader.tensors)
    align = int(reader.alignment)
    infos_start = min(int(t.field.offset) for t in tensors)
    offsets, position = {}, 0
    for t in sorted(tensors, key=lambda t: int(t.data_offset)):
        offsets[t.name] = position
        size = len(replaced[t.name][1]) if t.name in replaced else int(t.n_bytes)
        position += size + (-size % align)
    infos = bytearray()
    for t in tensors:
        parts = t.field.parts
        qtype = replaced[t.name][0] if t.name in replaced else int(parts[-2][0])
        infos += b"".join(bytes(p.tobytes()) for p in parts[:-2])
        infos += np.array([qtype], dtype=parts[-2].dtype).tobytes()
        infos += np.array([offsets[t.name]], dtype=parts[-1].dtype).tobytes()
    with source.open("rb") as src, out.open("wb") as dst:
        dst.write(src.read(infos_start))
        dst.write(infos)
        dst.write(b"\0" * (-dst.tell() % align))
        base = dst.tell()
        for t in sorted(tensors, key=lambda t: int(t.data_offset)):
            dst.write(b"\0" * (base + offsets[t.name] - dst.tell()))
            if t.name in replaced:
                dst.write(replaced[t.name][1])
            else:
                src.seek(int(t.data_offset))
                dst.write(src.read(int(t.n_bytes)))
        dst.write(b"\0" * (-(dst.tell() - base) % align))


# --- converting any other source with llama.cpp's tools -------------------------------------


def convert(job: ExportJob, folder: Path) -> dict[str, Any]:
    """The cut model as a transformers directory, then llama.cpp's converter and quantizer."""
    need("llama_cpp", "llamacpp")
    quant = job.quant.lower() if job.quant else None
    dtype = job.float_dtype()
    first = quant if quant in CONVERTER_TYPES else _FLOAT_OUT[dtype]
    if quant is not None and quant not in CONVERTER_TYPES:
        llamacpp.file_type(quant)  # a typo fails before the conversion
    scratch = folder / ".hf-scratch"
    converted = folder / f".{job.name}-{first}.gguf"
    label = (quant or first).upper()
    out = folder / f"{job.name}-{label}.gguf"
    try:
        save_transformers(job.model, job.tokenizer, scratch, dtype)
        llamacpp.convert_hf(scratch, converted, first)
        if quant is None or quant in CONVERTER_TYPES:
            converted.rename(out)
        else:
            llamacpp.quantize_file(converted, out, quant)  # in a child; out appears only complete
    finally:  # a failed step leaves neither the scratch copy nor a half-written file
        shutil.rmtree(scratch, ignore_errors=True)
        converted.unlink(missing_ok=True)
    floats = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", None: DTYPE_NAMES[dtype]}
    return {
        "dtype": floats.get(quant),
        "quantization": label,
        "gguf_file": out.name,
        "bytes": out.stat().st_size,
    }


def check(folder: Path) -> int:
    """Reopen every ``.gguf``: the tensor table must parse and every tensor's data be there."""
    import gguf

    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise VaubanError(f"{folder} holds no .gguf file; re-export it")
    total = 0
    for file in files:
        try:
            check_gguf(file)
            reader = gguf.GGUFReader(file)
            end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
        except VaubanError:
            raise
        except Exception as err:  # gguf-py raises ValueError, struct errors, numpy errors
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise VaubanError(f"{file} is not a complete GGUF file ({first}); re-export it") from None
        if end > file.stat().st_size:
            raise VaubanError(
                f"{file} is truncated ({file.stat().st_size} bytes, tensors need {end}); re-export it"
            )
        total += len(reader.tensors)
    return total
