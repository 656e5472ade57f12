"""Peak memory of cutting a Qwen3-MoE-shaped model's fused expert tensors.

One decoder layer of Qwen3-30B-A3B's shape (hidden 2048, 128 experts of 768, so a fused
``down_proj`` of 128 × 2048 × 768), random bf16 weights, a small vocabulary: the peak of a cut is
set by its largest tensor, not by the number of layers. The script builds the model, resets the
process's peak resident memory (``/proc/self/clear_refs``), then measures the peak above the
model's own memory while ``vauban.cut`` applies the cut (this includes what the cut keeps to undo
itself, ``undo_record_mb``), and again while it undoes it.

Run it once with the code under test and once with an older checkout to compare, e.g.::

    PYTHONPATH=src python benchmarks/moe_memory.py --label after --out results.json
    PYTHONPATH=/path/to/old/src python benchmarks/moe_memory.py --label before --out results.json

(each run adds its entry to ``--out``; Linux only).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

QWEN3_30B_A3B = {
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "vocab_size": 1024,
    "num_hidden_layers": 1,
    "max_position_embeddings": 4096,
}


def _status(key: str) -> int:
    """A /proc/self/status field in bytes."""
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024


def _reset_peak() -> int:
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _status("VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import vauban
    from vauban.model import arch

    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen3_moe", **QWEN3_30B_A3B)
    with torch.device("meta"):  # no initialization pass: random values are filled in once below
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    model.to_empty(device="cpu")
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02)
    writers = arch.residual_writers(model)
    expert = next(w.weight for w in writers if w.weight.dim() == 3)
    d = torch.randn(config.hidden_size)
    before = {k: v.clone() for k, v in model.state_dict().items() if "down_proj" in k or "o_proj" in k}
    base = _reset_peak()
    t0 = time.perf_counter()
    applied = vauban.cut(model, d)
    apply_s = time.perf_counter() - t0
    apply_peak = _status("VmHWM") - base
    kept = getattr(applied, "undo_bytes", None)  # what the cut keeps to undo itself (newer vauban)
    base_undo = _reset_peak()
    t0 = time.perf_counter()
    applied.undo()
    undo_s = time.perf_counter() - t0
    undo_peak = _status("VmHWM") - base_undo
    exact = all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    entry = {
        "label": args.label,
        "vauban_file": vauban.__file__,
        "shape": "Qwen3-30B-A3B, 1 decoder layer, bf16",
        "fused_down_proj": list(expert.shape),
        "fused_down_proj_mb": round(expert.numel() * expert.element_size() / 1e6, 1),
        "one_expert_mb": round(expert[0].numel() * expert.element_size() / 1e6, 2),
        "apply_peak_extra_mb": round(apply_peak / 1e6, 1),
        "undo_record_mb": None if kept is None else round(kept / 1e6, 1),
        "undo_peak_extra_mb": round(undo_peak / 1e6, 1),
        "apply_s": round(apply_s, 2),
        "undo_s": round(undo_s, 2),
        "undo_bit_exact": exact,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    out = Path(args.out)
    runs = json.loads(out.read_text())["runs"] if out.is_file() else []
    runs = [r for r in runs if r["label"] != args.label] + [entry]
    out.write_text(json.dumps({"benchmark": "benchmarks/moe_memory.py", "runs": runs}, indent=1) + "\n")
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
