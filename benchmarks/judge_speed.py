"""How long the learned judge takes per answer, on this CPU and on a GPU (issue 24).

The cost is the backbone's forward pass up to the head's layer over prompt (<= 128 tokens) +
answer (<= the head's answer tokens), batched as the judge batches; the head itself is a dot
product. Answers: the first ``--answers`` labelled answers of ``judge_data/labels/`` (sorted by
id; real lengths, many at the cap), judged in one call as ``evaluate`` would.

    python benchmarks/judge_speed.py                     # CPU, the shipped backbone
    python benchmarks/judge_speed.py --save-skeleton build/judge_skeleton   # config + tokenizer only
    python benchmarks/judge_speed.py --skeleton build/judge_skeleton --device cuda   # on a GPU

The backbone's weights cannot travel to the GPU machine, so there the same architecture is
built from the shipped backbone's config with random weights (``--skeleton``): the time of a forward
pass does not depend on the weights' values. Writes ``results/judge_speed_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from judge_train import load_rows
from provenance import stamp
from vauban.core.atomic import write_file
from vauban.judge.learned import BATCH, PROMPT_TOKENS, Head, Reader, backbone_source

RESULTS = Path(__file__).parent / "results"


def skeleton_reader(folder: Path, head: Head, device: str, dtype: torch.dtype) -> Reader:
    """The backbone's architecture from its saved config, random weights, its own tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
    return Reader(model, AutoTokenizer.from_pretrained(folder), [head.layer], head.answer_tokens)


def save_skeleton(folder: Path, backbone: str) -> None:
    from vauban.model.loading import load_model

    model, tokenizer = load_model(backbone_source(backbone), device="cpu", dtype=torch.float32)
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    print(f"config and tokenizer of {backbone} -> {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--skeleton", type=Path, help="config + tokenizer folder: random weights")
    parser.add_argument("--save-skeleton", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    head = Head.read()
    if args.save_skeleton:
        save_skeleton(args.save_skeleton, head.backbone)
        return
    dtype = getattr(torch, args.dtype)
    rows = sorted(load_rows(), key=lambda r: r["id"])[: args.answers]
    t0 = time.perf_counter()
    if args.skeleton:
        reader = skeleton_reader(args.skeleton, head, args.device, dtype)
    else:
        reader = Reader.load(head.backbone, [head.layer], answer_tokens=head.answer_tokens)
        reader.model.to(args.device, dtype)
    load_s = time.perf_counter() - t0
    reader.features([r["prompt"] for r in rows[:BATCH]], [r["answer"] for r in rows[:BATCH]])  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    reader.features([r["prompt"] for r in rows], [r["answer"] for r in rows])
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t1
    tokens = [len(reader.encode(r["prompt"], r["answer"])[0]) for r in rows]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    out = {
        **stamp(),
        "what": "learned judge: backbone forward up to the head's layer + pooling, per answer",
        "backbone": head.backbone,
        "weights": "random (config of the shipped backbone)" if args.skeleton else "shipped",
        "layer": head.layer,
        "device": args.device,
        "device_name": device_name,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "batch": BATCH,
        "answers": len(rows),
        "prompt_tokens_max": PROMPT_TOKENS,
        "answer_tokens_max": head.answer_tokens,
        "mean_tokens": round(sum(tokens) / len(tokens), 1),
        "load_s": round(load_s, 2),
        "seconds": round(seconds, 2),
        "ms_per_answer": round(1000 * seconds / len(rows), 2),
        "minutes_for_1350": round(seconds / len(rows) * 1350 / 60, 2),
    }
    print(json.dumps(out, indent=1))
    tag = "cpu" if args.device == "cpu" else args.device.split(":")[0]
    path = args.out or RESULTS / f"judge_speed_{tag}.json"
    write_file(path, lambda tmp: tmp.write_text(json.dumps(out, indent=1) + "\n"))


if __name__ == "__main__":
    main()
