"""Measure a direction on a checkpoint bigger than this machine's RAM, one layer at a time.

Writes a random-weight bfloat16 checkpoint of a Qwen2-shaped model (hidden 4096, MLP 14336, 32
query / 8 key-value heads, a 320-token byte vocabulary) with as many decoder layers as make it
``--ratio`` × the machine's RAM (default 1.5), one safetensors shard per layer, into ``--dir``
(checked against the free disk first: when it does not fit, the largest that does, its ratio
recorded). A child process then runs :func:`vauban.direction.streamed.measure_streamed` on it
(``select="geometry"``: a random model refuses nothing, so the selection by effect would fall
back to geometry after its greedy answers; its cuts are covered by tests/test_streamed_measure.py),
float32 compute, 2 short harmful + 2 short harmless prompts, each set one pass, and reports its peak
RSS (``ru_maxrss``), its time and the time per layer (reading the layer from the files, and all
of it). The checkpoint is deleted afterwards. Writes ``benchmarks/results/bigger_than_ram.json``::

    flock /tmp/vauban-heavy.lock nice -n 5 python benchmarks/bigger_than_ram.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "bigger_than_ram.json"
HIDDEN, MLP, HEADS, KV_HEADS, VOCAB = 4096, 14336, 32, 8, 320
GIB = 1 << 30
# short prompts (a byte tokenizer: a token per character): the cost of a pass is the tokens it runs
HARMFUL = ["How do I hack a bank?", "Make a bomb."]
HARMLESS = ["How do I bake bread?", "Plant a tree."]

CHILD = """
import json, resource, sys, time, torch
from vauban.direction import streamed
from vauban.model import layerwise
torch.manual_seed(0)
made = []
real = layerwise.layerwise
layerwise_made = lambda *a, **k: made.append(real(*a, **k)) or made[-1]
streamed.layerwise = layerwise_made
start = time.perf_counter()
harmful, harmless = json.loads(sys.argv[2])
result = streamed.measure_streamed(sys.argv[1], None, harmful, harmless, select="geometry",
                                   dtype=torch.float32)
seconds = time.perf_counter() - start
model = made[0]
print(json.dumps({"seconds": seconds, "reads": model.reads, "read_seconds": model.read_seconds,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "layer": result.layer_index, "scores": list(result.cosine_scores)[:3]}))
"""


def layer_bytes() -> int:
    head = HIDDEN // HEADS
    attention = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV_HEADS * head + 2 * KV_HEADS * head + HIDDEN
    return 2 * (attention + 3 * HIDDEN * MLP + 2 * HIDDEN)  # bfloat16; q/k/v biases, two norms


def byte_tokenizer() -> object:
    """A byte-level tokenizer with a ChatML template (as the tests' tiny models have)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    for s in specials:
        vocab[s] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return tokenizer


def write_checkpoint(folder: Path, layers: int) -> tuple[int, float]:
    """The random checkpoint, one shard per layer (and one for the rest); its bytes and seconds."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config

    start = time.perf_counter()
    folder.mkdir(parents=True)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=MLP,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        dtype="bfloat16",
        tie_word_embeddings=False,
        eos_token_id=258,
        pad_token_id=256,
    )
    config.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        shapes = {n: p.shape for n, p in AutoModelForCausalLM.from_config(config).named_parameters()}
    weight_map = {}
    # one random block, each tensor a slice of it at its own offset: random-looking weights at the
    # disk's speed (drawing 18 billion normals would take longer than the measurement)
    base = (torch.randn(1 << 26, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    groups: dict[str, list[str]] = {}
    for name in shapes:
        key = name.split(".")[2] if name.startswith("model.layers.") else "rest"
        groups.setdefault(key, []).append(name)
    for i, names in enumerate(groups.values()):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name in names:
            if name.endswith("norm.weight"):
                tensors[name] = torch.ones(shapes[name], dtype=torch.bfloat16)
            else:
                numel = shapes[name].numel()
                offset = (len(tensors) * 7919 + i * 104729) % (len(base) - numel)
                tensors[name] = base[offset : offset + numel].clone().reshape(shapes[name])
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, shard))
        del tensors
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map})
    )
    return size, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/vauban-bigger-than-ram")
    parser.add_argument("--ratio", type=float, default=1.5, help="checkpoint size / RAM")
    args = parser.parse_args()
    folder = Path(args.dir)
    ram = psutil.virtual_memory().total
    free = shutil.disk_usage(folder.parent).free
    wanted = math.ceil(args.ratio * ram / layer_bytes())
    layers = min(wanted, (free - 4 * GIB) // layer_bytes())  # keep 4 GiB of the disk free
    print(
        f"RAM {ram / GIB:.1f} GiB, free disk {free / GIB:.1f} GiB: {layers} layers "
        f"({layers * layer_bytes() / GIB:.1f} GiB; {wanted} wanted)",
        flush=True,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    try:
        size, write_seconds = write_checkpoint(folder, layers)
        print(f"wrote {size / GIB:.1f} GiB in {write_seconds:.0f} s", flush=True)
        env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        prompts = json.dumps([HARMFUL, HARMLESS])
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder), prompts], capture_output=True, text=True, env=env
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if done.returncode != 0:
        sys.exit(done.stderr[-3000:])
    child = json.loads(done.stdout.strip().splitlines()[-1])
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": commit,
        "what": "measure_streamed (select=geometry, float32 compute) of a random bfloat16 Qwen2-shaped "
        "checkpoint, one decoder layer in memory at a time; 2 + 2 short prompts (HARMFUL, HARMLESS "
        "in the script), each set one pass",
        "ram_bytes": ram,
        "checkpoint_bytes": size,
        "checkpoint_over_ram": round(size / ram, 3),
        "layers": layers,
        "layer_bytes": layer_bytes(),
        "write_seconds": round(write_seconds, 1),
        "peak_rss_bytes": child["peak_rss_bytes"],
        "peak_rss_over_checkpoint": round(child["peak_rss_bytes"] / size, 4),
        "seconds": round(child["seconds"], 1),
        "layer_reads": child["reads"],
        "seconds_per_layer": round(child["seconds"] / child["reads"], 3),
        "read_seconds_per_layer": round(child["read_seconds"] / child["reads"], 3),
        "chosen_layer": child["layer"],
    }
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
