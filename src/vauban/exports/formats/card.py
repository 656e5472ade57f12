"""The model card: a ``README.md`` in the Hugging Face Hub's format, in every export.

A YAML header the Hub reads (``base_model`` when the source is a known Hub model, ``license``
when the source says it, ``tags: [abliterated, vauban, <format>]``, ``library_name``,
``pipeline_tag``), then how the model was made (source, direction, cut, format, vauban version),
the evaluation table when one was run, and how to load it. Everything comes from the record
that ``vauban.json`` carries, so the card and the record never disagree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ...model.loading import ModelSource

DEMO_BASE = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
DEMO_LICENSE = "apache-2.0"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LIBRARY = {"safetensors": "transformers", "gguf": "gguf", "lora": "peft", "mlx": "mlx"}


def source_facts(source: ModelSource | None) -> dict[str, str]:
    """``base_model`` and ``license`` of the source where they are known."""
    if source is None:
        return {}
    kind = source.kind.removeprefix("hub/")
    if source.kind == "demo":
        return {"base_model": DEMO_BASE, "license": DEMO_LICENSE}
    facts: dict[str, str] = {}
    if source.kind.startswith("hub/") and _HUB_ID.match(source.label):
        facts["base_model"] = source.label
    origin = Path(source.origin) if source.origin else None
    if origin is None:
        return facts
    if kind == "gguf":
        facts = {**_gguf_facts(origin), **facts}
    else:
        header = _yaml_header(origin / "README.md")
        if "license" in header:
            facts["license"] = header["license"]
    return facts


def _gguf_facts(path: Path) -> dict[str, str]:
    import gguf

    try:
        fields = gguf.GGUFReader(path).fields
    except Exception:  # an unreadable file was already reported by the export itself
        return {}

    def text(key: str) -> str | None:
        field = fields.get(key)
        value = field.contents() if field is not None else None
        return value if isinstance(value, str) and value else None

    facts = {}
    if lic := text("general.license"):
        facts["license"] = lic
    url = text("general.base_model.0.repo_url") or ""
    if url.startswith("https://huggingface.co/") and _HUB_ID.match(
        url.removeprefix("https://huggingface.co/")
    ):
        facts["base_model"] = url.removeprefix("https://huggingface.co/")
    return facts


def _yaml_header(path: Path) -> dict[str, str]:
    """Top-level ``key: value`` scalars of a model card's YAML header (enough for a licence)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = re.match(r"---\s*\n(.*?)\n---", text, re.S)
    if not match:
        return {}
    out = {}
    for line in match.group(1).splitlines():
        if m := re.match(r"^([A-Za-z_]+):\s*(\S.*)$", line):
            out[m.group(1)] = m.group(2).strip().strip("'\"")
    return out


def write_card(folder: Path, record: dict[str, Any], source: ModelSource | None) -> None:
    """Write ``folder/README.md`` from the export's record."""
    fmt = record.get("format", "safetensors")
    facts = source_facts(source)
    header = ["---"]
    if "base_model" in facts:
        header.append(f"base_model: {json.dumps(facts['base_model'])}")
    if "license" in facts:
        header.append(f"license: {json.dumps(facts['license'])}")
    header += [
        "tags:",
        "- abliterated",
        "- vauban",
        f"- {fmt}",
        f"library_name: {_LIBRARY.get(fmt, 'transformers')}",
        "pipeline_tag: text-generation",
        "---",
        "",
    ]
    title = facts.get("base_model", "").rsplit("/", 1)[-1] or "Model"
    body = [
        f"# {title}, abliterated",
        "",
        f"An abliterated version of {facts.get('base_model', record.get('source', 'the source model'))}: "
        "[vauban](https://pypi.org/project/vauban/) measured the direction along which the model "
        "represents refusal and removed it from the weights that write into the residual stream "
        "(directional ablation, weight orthogonalization).",
        "",
        "## How it was made",
        "",
        "| | |",
        "| --- | --- |",
    ]
    body += [f"| {k} | {v} |" for k, v in _made(record)]
    evaluation = record.get("evaluation")
    if isinstance(evaluation, dict) and evaluation:
        body += ["", "## Evaluation", "", *_eval_table(evaluation)]
    base = facts.get("base_model", record.get("source", "BASE_MODEL"))
    body += [
        "",
        "## Use",
        "",
        "```",
        *_usage(fmt, record, base),
        "```",
        "",
        "Removing refusals removes a safeguard: you are responsible for how this model is used.",
        "",
    ]
    (folder / "README.md").write_text("\n".join(header + body), encoding="utf-8")


def _made(record: dict[str, Any]) -> list[tuple[str, str]]:
    cut = record.get("cut") or {}
    direction = record.get("direction") or {}
    layers = record.get("layers", cut.get("layers"))
    quant = record.get("quantization")
    rows = [
        ("source", f"`{record['source']}`" if record.get("source") else None),
        (
            "direction",
            f"difference of means at layer {direction.get('layer_index')} "
            f"({direction.get('n_harmful', '?')} harmful vs {direction.get('n_harmless', '?')} "
            f"harmless prompts, separation {direction.get('max_cosine', 0):.3f})"
            if direction
            else None,
        ),
        ("alpha", record.get("alpha", cut.get("alpha"))),
        (
            "layers",
            (f"{len(layers)} ({layers[0]}–{layers[-1]})" if layers else "none")
            if isinstance(layers, list)
            else None,
        ),
        ("cut", _variant(cut, record) if cut or "alpha" in record else None),
        ("edited tensors", record.get("edited_tensors", cut.get("edited_tensors"))),
        ("format", f"{record.get('format', 'safetensors')}, {quant or record.get('dtype', '?')}"),
        ("vauban", (record.get("versions") or {}).get("vauban")),
    ]
    return [(k, str(v)) for k, v in rows if v is not None]


def _variant(cut: dict[str, Any], record: dict[str, Any]) -> str:
    parts = []
    if cut.get("norm_preserving"):
        parts.append("norm-preserving")
    if any(w != 1.0 for w in cut.get("attention_weights", []) + cut.get("mlp_weights", [])):
        parts.append("per-layer weights")
    if int(cut.get("subspace_rank", 1)) > 1:
        parts.append(f"subspace of rank {cut['subspace_rank']}")
    if record.get("embeddings", cut.get("embeddings")):
        parts.append("embeddings too")
    if "optimization" in record:
        parts.append(f"optimized (trial {record['optimization'].get('trial', {}).get('number', '?')})")
    return ", ".join(parts) or "plain"


def _eval_table(evaluation: dict[str, Any]) -> list[str]:
    """``x_before``/``x_after`` pairs as rows of original vs abliterated, other numbers alone."""
    rows, single = [], []
    for key, value in evaluation.items():
        if key.endswith("_before") and f"{key[:-7]}_after" in evaluation:
            rows.append(
                f"| {key[:-7].replace('_', ' ')} | {_fmt(value)} | {_fmt(evaluation[key[:-7] + '_after'])} |"
            )
        elif not key.endswith("_after") and isinstance(value, int | float | str):
            single.append(f"| {key.replace('_', ' ')} | | {_fmt(value)} |")
    return ["| | original | abliterated |", "| --- | --- | --- |", *rows, *single]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _usage(fmt: str, record: dict[str, Any], base: str) -> list[str]:
    gguf_file = record.get("gguf_file", "MODEL.gguf")
    if fmt == "gguf":
        return [
            f"llama-cli -m {gguf_file} -cnv",
            f"# Ollama: a Modelfile with the line `FROM ./{gguf_file}`, then `ollama create NAME`",
            f"python -c \"from llama_cpp import Llama; Llama('{gguf_file}')\"",
        ]
    if fmt == "lora":
        return [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            f"base = AutoModelForCausalLM.from_pretrained({json.dumps(base)})",
            "model = PeftModel.from_pretrained(base, 'THIS_DIRECTORY')  # or .merge_and_unload()",
        ]
    if fmt == "mlx":
        return [
            "from mlx_lm import load, generate",
            "model, tokenizer = load('THIS_DIRECTORY')",
            "print(generate(model, tokenizer, 'Hello'))",
        ]
    return [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained('THIS_DIRECTORY')",
        "tokenizer = AutoTokenizer.from_pretrained('THIS_DIRECTORY')",
    ]
