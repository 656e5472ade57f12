"""Every export format on the demo model: size, export time, and agreement with the model vauban
computed (docs/benchmarks.md's export-formats table; results in ``benchmarks/results/exports_demo.json``).

The cut: the bundled 128 + 128 prompts' direction, plain, alpha 1, every layer. The yardstick:

- refusal: greedy answers of ``--max-tokens`` (default 64) tokens to the 100 bundled evaluation
  prompts, judged by vauban's marker judge (``vauban.judge``, spec ``markers``), for the
  float32 model in memory (what the float export holds) and for each exported model run by its
  own runtime (llama.cpp for GGUF, mlx_lm for MLX, on its first ``--mlx-prompts``; transformers
  for the others); the uncut model's rate on the first ``--original-prompts``, for context;
- first-token logits on the first ``--logit-prompts`` (default 20) of those prompts against the
  float32 model in memory: max |Δ|, mean |Δ|, and top-1 agreement.

Run (about 15 minutes on 2 CPU cores)::

    python benchmarks/exports_demo.py --out benchmarks/results/exports_demo.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from provenance import stamp
from vauban import cut, export, measure, quick
from vauban.evaluation.evaluating import default_eval_prompts
from vauban.exports.formats import ExportJob, llamacpp
from vauban.exports.formats import gguf as gguf_format
from vauban.judge import get_judge, run_judge
from vauban.judge.answers import completions
from vauban.runtime.generating import decode_answer, stop_token_ids
from vauban.text.prompts import encode_chat


def weights_bytes(folder: Path) -> int:
    names = ("*.gguf", "model*.safetensors", "adapter_model.safetensors")
    return sum(p.stat().st_size for pattern in names for p in folder.glob(pattern))


def logit_stats(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    diff = np.abs(reference - got)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_scale": float(np.abs(reference).max()),
        "top1_agreement": float((reference.argmax(-1) == got.argmax(-1)).mean()),
    }


def transformers_first_logits(model: Any, ids: list[list[int]]) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for seq in ids:
            rows.append(model(input_ids=torch.tensor([seq])).logits[0, -1].float().numpy())
    return np.stack(rows)


def llama_answers(
    path: Path, ids: list[list[int]], stops: list[int], tokenizer: Any, max_tokens: int, logit_prompts: int
) -> tuple[list[str], np.ndarray, float]:
    start = time.perf_counter()  # answering in a child process, which loads the file first (~1 s)
    tokens = llamacpp.greedy_answers(path, ids, stops, max_tokens, n_ctx=512)
    seconds = time.perf_counter() - start
    texts = [decode_answer(tokenizer, seq, stops) for seq in tokens]
    logits = llamacpp.first_logits(path, ids[:logit_prompts], n_ctx=512)
    return texts, logits, seconds


def mlx_answers(
    folder: Path, ids: list[list[int]], stops: list[int], tokenizer: Any, max_tokens: int, logit_prompts: int
) -> tuple[list[str], np.ndarray, float, str]:
    """Greedy answers and first-token logits from mlx_lm; the last item: the activations' dtype."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler

    model, _ = mlx_lm.load(str(folder))
    activations = "float32" if mx.default_device() == mx.cpu else "float16"
    if activations == "float32":
        # mlx's CPU quantized matmul with float16 activations runs about 45x slower than with
        # float32 (measured here: 3.8 s vs 0.085 s for a 30x896x4864 product, mlx 0.32.4), so
        # on a CPU the same 4-bit weights run with float32 scales and activations; on a Mac's
        # GPU mlx_lm runs them in the export's float16.
        model.set_dtype(mx.float32)
    greedy = make_sampler(temp=0.0)
    start = time.perf_counter()
    texts = []
    for seq in ids:
        new = []
        for token, _ in generate_step(mx.array(seq), model, max_tokens=max_tokens, sampler=greedy):
            if int(token) in stops:
                break
            new.append(int(token))
        texts.append(decode_answer(tokenizer, new, stops))
    seconds = time.perf_counter() - start
    logits = np.stack(
        [np.array(model(mx.array([seq]))[0, -1].astype(mx.float32)) for seq in ids[:logit_prompts]]
    )
    return texts, logits, seconds, activations


def save(results: dict[str, Any], path: str) -> None:
    """Write what is measured so far (a long run that dies keeps its numbers)."""
    Path(path).write_text(json.dumps(results, indent=1) + "\n")


def same(texts: list[str], completions_: Any) -> int:
    """How many answers are word for word the float32 model's."""
    return sum(a == c.text for a, c in zip(texts, completions_, strict=True))


def rate(prompts: list[str], texts: list[str]) -> float:
    """The marker judge's refusal rate (what ``evaluate`` counts by default)."""
    return sum(v.refusal for v in run_judge(get_judge("markers"), prompts, texts)) / len(texts)


def measure_others(
    formats: dict,
    timed: Any,
    save_now: Any,
    model: Any,
    tokenizer: Any,
    root: Path,
    ids: list[list[int]],
    prompts: list[str],
    stops: list[int],
    floats: list[Any],
    reference: np.ndarray,
    args: argparse.Namespace,
) -> None:
    """safetensors (source dtype and float32), GGUF (patched and through the converter), LoRA."""
    # safetensors in the source's dtype (float16 for a GGUF source), and float32 for scale
    half = timed("safetensors")
    timed("safetensors-float32", dtype="float32")
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(half, dtype=torch.float16).eval()
    formats["safetensors"]["first_token"] = logit_stats(
        reference, transformers_first_logits(loaded.float(), ids[: args.logit_prompts])
    )
    del loaded

    # GGUF from the GGUF source: patched, edited tensors re-quantized to their own types
    folder = timed("gguf", format="gguf")
    record = json.loads((folder / "vauban.json").read_text())
    texts, logits, seconds = llama_answers(
        folder / record["gguf_file"], ids, stops, tokenizer, args.max_tokens, args.logit_prompts
    )
    formats["gguf"].update(
        source_bytes=record["source_bytes"],
        refusal=rate(prompts, texts),
        llama_cpp_answer_seconds=round(seconds, 1),
        first_token=logit_stats(reference, logits),
        same_answer_as_float32=same(texts, floats),
    )
    save_now()

    # GGUF through llama.cpp's converter (what a Hugging Face source gets), f16 and q8_0
    for quant in ("f16", "q8_0"):
        name = f"gguf-{quant}-converter"
        out = root / name
        out.mkdir()
        start = time.perf_counter()
        info = gguf_format.convert(ExportJob(model, tokenizer, None, quant, None, "demo"), out)
        options = {"format": "gguf", "quant": quant, "source": "transformers directory"}
        formats[name] = {
            "options": options,
            "seconds": round(time.perf_counter() - start, 1),
            "weights_bytes": info["bytes"],
        }
        logits = llamacpp.first_logits(out / info["gguf_file"], ids[: args.logit_prompts], n_ctx=512)
        formats[name]["first_token"] = logit_stats(reference, logits)
        print(name, formats[name], flush=True)
        save_now()

    # LoRA adapter on the original float32 model (a second copy, uncut)
    adapter = timed("lora", format="lora")
    from peft import PeftModel

    base, _ = quick.load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(base, adapter).eval()
    formats["lora"]["first_token"] = logit_stats(
        reference, transformers_first_logits(peft_model, ids[: args.logit_prompts])
    )
    formats["lora"]["full_float32_bytes"] = formats["safetensors-float32"]["weights_bytes"]
    del peft_model, base


def measure_mlx(
    formats: dict,
    timed: Any,
    ids: list[list[int]],
    prompts: list[str],
    stops: list[int],
    tokenizer: Any,
    floats: list[Any],
    reference: np.ndarray,
    args: argparse.Namespace,
) -> None:
    """MLX 4-bit through mlx_lm's conversion, answered by mlx_lm (its first ``--mlx-prompts``)."""
    folder = timed("mlx-4bit", format="mlx", quant="4")
    n = args.mlx_prompts
    texts, logits, seconds, activations = mlx_answers(
        folder, ids[:n], stops, tokenizer, args.max_tokens, args.logit_prompts
    )
    formats["mlx-4bit"].update(
        refusal=rate(prompts[:n], texts),
        prompts=n,
        refusal_float32_same_prompts=sum(c.refused for c in floats[:n]) / n,
        mlx_answer_seconds=round(seconds, 1),
        mlx_activations=activations,
        first_token=logit_stats(reference, logits),
        same_answer_as_float32=same(texts, floats[:n]),
    )
    formats["mlx-4bit"].pop("note", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/exports_demo.json")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--logit-prompts", type=int, default=20)
    parser.add_argument("--original-prompts", type=int, default=20, help="the uncut model: context")
    parser.add_argument("--mlx-prompts", type=int, default=40, help="mlx_lm on a CPU is the slowest")
    parser.add_argument(
        "--only", choices=["mlx"], help="measure this format alone and merge it into --out (the rest kept)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    results: dict[str, Any] = {
        **stamp(),
        "machine": machine,
        "judge": "markers (vauban.judge)",
        "max_tokens": args.max_tokens,
        "prompts": f"bundled eval_harmful[:{args.prompts}]",
        "formats": {},
    }
    if args.only:  # the other formats' numbers stay; this part records its own commit and date
        part = {f"{args.only}_run": {**stamp(), "machine": machine}}
        results = json.loads(Path(args.out).read_text()) | part
        args.prompts = args.mlx_prompts  # the float32 answers it is compared with
    model, tokenizer = quick.load()
    direction = measure(model, tokenizer, "harmful", "harmless")
    prompts = default_eval_prompts(args.prompts)
    ids = encode_chat(tokenizer, prompts)
    stops = stop_token_ids(model, tokenizer)
    if not args.only:
        original = completions(
            model, tokenizer, prompts[: args.original_prompts], max_tokens=args.max_tokens, batch_size=None
        )
        results["refusal_original"] = sum(c.refused for c in original) / len(original)
        results["original_prompts"] = len(original)
    formats = results["formats"]
    with tempfile.TemporaryDirectory(dir=".") as tmp, cut(model, direction) as applied:
        root = Path(tmp)
        start = time.perf_counter()
        floats = completions(model, tokenizer, prompts, max_tokens=args.max_tokens, batch_size=None)
        if not args.only:
            results["refusal_float32_in_memory"] = sum(c.refused for c in floats) / len(floats)
            results["float32_answer_seconds"] = round(time.perf_counter() - start, 1)
        reference = transformers_first_logits(model, ids[: args.logit_prompts])

        def timed(name: str, **options: Any) -> Path:
            start = time.perf_counter()
            folder = export(model, tokenizer, root / name, direction=direction, **options)
            record = json.loads((folder / "vauban.json").read_text())
            formats[name] = {
                "options": options,
                "seconds": round(time.perf_counter() - start, 1),
                "weights_bytes": weights_bytes(folder),
                "quantization": record.get("quantization"),
                "dtype": record.get("dtype"),
            }
            print(name, formats[name], flush=True)
            save(results, args.out)
            return folder

        save_now = partial(save, results, args.out)
        if args.only != "mlx":
            measure_others(
                formats, timed, save_now, model, tokenizer, root, ids, prompts, stops, floats, reference, args
            )
        measure_mlx(formats, timed, ids, prompts, stops, tokenizer, floats, reference, args)
    results["edited_tensors"] = len(applied.edited)
    save(results, args.out)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
