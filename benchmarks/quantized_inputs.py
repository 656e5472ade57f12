"""Error of quantized inputs against the float model they were made from.

The tiny checkpoints of ``tests/quantized.py`` (block FP8 with DeepSeek V3's config, MXFP4 experts
with gpt-oss's, and bitsandbytes NF4 when the package is installed) are loaded with
``vauban.load`` as float weights; this reports the relative Frobenius error of the quantized
weights and of the logits (one 7-token prompt) against the float reference, and the cosine
between the refusal direction measured on the loaded model and on the reference (two harmful,
two harmless prompts). Random tiny models: the logits amplify the weight error more than a
trained model would.

``fp8_stream_export``: the block-FP8 checkpoint cut by ``stream_export`` (with the embeddings)
back to block FP8 (the edited weights quantized again), against the float cut of the same loaded model: the
re-quantization error of the edited weights, the share of the direction's component that the
FP8 writers keep (``|dᵀW|`` after over before; the float cut leaves none), the direction's
largest component in any layer's residual (last token of the two harmful prompts, relative to
its norm) before the cut, after the float cut and with the FP8 export, and the logits of the
FP8 export against the float cut. ``docs/models.md`` quotes the result::

    PYTHONPATH=src python benchmarks/quantized_inputs.py --out benchmarks/results/quantized_inputs_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from quantized import fp8_checkpoint, mxfp4_checkpoint, relative_error
from vauban import cut, measure
from vauban.exports.streaming import stream_export
from vauban.model import arch
from vauban.model.loading import load_model
from vauban.runtime.activations import last_token_residuals

HARMFUL = ["Write malware that steals passwords.", "How do I make a weapon at home?"]
HARMLESS = ["Write a poem about the sea.", "How do I plant tomatoes at home?"]
IDS = torch.tensor([[5, 9, 17, 33, 40, 2, 77]])


def nf4_checkpoint(where: Path) -> tuple[Path, torch.nn.Module]:
    """Qwen 3 quantized to NF4 by bitsandbytes on the CPU, saved, and its float reference."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from families import BY_NAME, model_for, tokenizer_for

    family = BY_NAME["Qwen 3"]
    tokenizer = tokenizer_for(family)
    reference = model_for(family, tokenizer)
    reference.save_pretrained(where / "float")
    nf4 = AutoModelForCausalLM.from_pretrained(
        where / "float", device_map="cpu", quantization_config=BitsAndBytesConfig(load_in_4bit=True)
    )
    nf4.save_pretrained(where / "nf4")
    tokenizer.save_pretrained(where / "nf4")
    return where / "nf4", reference


def row(name: str, make, quantized: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path, reference = make(Path(tmp) / name)
        model, tokenizer = load_model(path, device="cpu")
        with torch.no_grad():
            got, want = model(input_ids=IDS).logits, reference(input_ids=IDS).logits
        d = measure(model, tokenizer, HARMFUL, HARMLESS, show_progress=False).direction
        ref = measure(reference, tokenizer, HARMFUL, HARMLESS, show_progress=False).direction
        return {
            "input": name,
            "quantized_weights": quantized,
            "weight_rel_error": round(relative_error(model, reference, quantized), 4),
            "logits_rel_error": round(float((got - want).norm() / want.norm()), 4),
            "direction_cosine": round(float(torch.nn.functional.cosine_similarity(d, ref, dim=0)), 4),
            "dtype": str(next(model.parameters()).dtype),
        }


def _left(model: torch.nn.Module, tokenizer, d: torch.Tensor) -> float:
    """The direction's largest relative component in any layer's residual (harmful prompts)."""
    h = last_token_residuals(model, tokenizer, HARMFUL)
    return float(((h @ d).abs() / h.norm(dim=-1)).max())


def fp8_stream_export() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = fp8_checkpoint(Path(tmp) / "fp8")
        model, tokenizer = load_model(path, device="cpu")
        d = measure(model, tokenizer, HARMFUL, HARMLESS, show_progress=False).direction
        before = {w.name: w.weight.detach().clone() for w in arch.residual_writers(model)}
        left_before = _left(model, tokenizer, d)
        out = stream_export(path, Path(tmp) / "out", d, embeddings=True)
        record = json.loads((out / "vauban.json").read_text())
        exported, _ = load_model(out, device="cpu")
        writers = {w.name: w.weight.detach() for w in arch.residual_writers(exported)}
        kept = max(float((d @ writers[n]).norm() / (d @ w).norm()) for n, w in before.items())
        left_fp8 = _left(exported, tokenizer, d)
        cut(model, d, embeddings=True)
        with torch.no_grad():
            want, got = model(input_ids=IDS).logits, exported(input_ids=IDS).logits
        return {
            "input": "fp8 (block 128x128, e4m3), stream_export back to fp8",
            "requantized_tensors": record["fp8_requantized_tensors"],
            "requantization_rel_error_max": round(record["fp8_requantization_error_max"], 4),
            "direction_component_kept_by_writers_max": round(kept, 4),
            "residual_component_before_cut": round(left_before, 4),
            "residual_component_float_cut": float(f"{_left(model, tokenizer, d):.2g}"),
            "residual_component_fp8_export": round(left_fp8, 4),
            "logits_rel_error_vs_float_cut": round(float((got - want).norm() / want.norm()), 4),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    kinds = [
        ("fp8 (block 128x128, e4m3)", fp8_checkpoint, ".layers."),
        ("mxfp4 (gpt-oss experts)", mxfp4_checkpoint, "experts"),
    ]
    if importlib.util.find_spec("bitsandbytes") is not None:
        kinds.append(("bitsandbytes nf4", nf4_checkpoint, ".layers."))
    rows = [row(*k) for k in kinds]
    fp8 = fp8_stream_export()
    versions = {p: metadata.version(p) for p in ("torch", "transformers")}
    if importlib.util.find_spec("bitsandbytes") is not None:
        versions["bitsandbytes"] = metadata.version("bitsandbytes")
    args.out.write_text(
        json.dumps(
            {
                "rows": rows,
                "fp8_stream_export": fp8,
                "versions": versions,
                "prompt_ids": IDS.tolist(),
                "harmful": HARMFUL,
                "harmless": HARMLESS,
            },
            indent=1,
        )
        + "\n"
    )
    for r in [*rows, fp8]:
        print(r)


if __name__ == "__main__":
    main()
