"""The GPU table of docs/benchmarks.md, regenerated from a ``benchmarks/gpu.py`` results file.

    python benchmarks/gpu_table.py benchmarks/results/gpu_h200_llama-3.1-8b.json \
        benchmarks/results/gpu_2xh200_replicas.json benchmarks/results/gpu_2xh200_llama-3.1-8b.json

Every figure comes from those files (a section is taken from the first file that has it); the
``before`` column is issue 18's table (the same script on the previous code).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# the previous run's figures (issue 18's table: one H200, 2026-11-27 code)
BEFORE = {
    "gen20": "2,101 tok/s (40 %)",
    "gen100": "6,081 tok/s (23 %)",
    "capture": "50 % of bf16 peak",
    "cut": "28.6 ms (12.1×)",
    "trial": "1.43 s",
}


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def table(rows: dict[str, Any]) -> str:
    g, c, k, t = (rows.get(s, {}) for s in ("generation", "capture", "cut", "trial"))
    rep, split = rows.get("replicas", {}), rows.get("split", {})
    head = (
        "| path | before (issue 18) | vauban now (default, exact) | ablation rows, same run | vs the bound |"
    )
    lines = [head, "| --- | --- | --- | --- | --- |"]
    for key, before, label in (("b20x100", "gen20", "20 × 100"), ("b100x64", "gen100", "100 × 64")):

        def get(name: str, key: str = key) -> Any:
            return g.get(f"{key}_{name}")

        now = f"{_n(get('fast_tok_s'))} tok/s, {_pct(get('fast_rows_identical_frac'))} rows = `generate`'s"
        ablation = (
            f"compiled + chunked prefill: {_n(get('compiled_tok_s'))} tok/s "
            f"({_pct(get('compiled_rows_identical_frac'))} rows = `generate`'s); "
            f"previous loop {_n(get('old_static_tok_s'))}; no graph {_n(get('no_graph_tok_s'))}; "
            f"`model.generate` {_n(get('plain_tok_s'))}"
        )
        bound = f"{_pct(get('fast_bound_frac'))} (compiled {_pct(get('compiled_bound_frac'))})"
        lines.append(f"| greedy generation {label} | {BEFORE[before]} | {now} | {ablation} | {bound} |")
    ablation = (
        f"previous loop {_pct(c.get('old_batch64_sync_peak_frac'))}; compiled layers "
        f"{_pct(c.get('compiled_peak_frac'))}; one prompt at a time {_n(c.get('one_at_a_time_tok_s'))} tok/s"
    )
    lines.append(
        f"| residual capture, 256 prompts | {BEFORE['capture']} | {_n(c.get('default_tok_s'))} tok/s | "
        f"{ablation} | {_pct(c.get('default_peak_frac'))} of bf16 peak (790 TFLOP/s) |"
    )
    api, alone = _n(k.get("api_fused_apply_ms"), 1), _n(k.get("fused_apply_ms"), 1)
    now = f"{api} ms (`vauban.cut`), kernels alone {alone} ms"
    ablation = (
        f"previous kernels {_n(k.get('two_pass_apply_ms'), 1)} ms; `W -= outer` bf16 "
        f"{_n(k.get('torch_bf16_ms'), 1)} ms, float32 {_n(k.get('torch_fp32_ms'), 1)} ms; "
        f"PyTorch path {_n(k.get('api_torch_apply_ms'), 1)} ms"
    )
    bound = (
        f"{_n(k.get('api_fused_apply_x_bound'), 1)}× read + write once (undo "
        f"{_n(k.get('api_fused_undo_x_bound'), 1)}×, bit-exact: {k.get('api_fused_undo_bit_exact')})"
    )
    lines.append(
        f"| first application of a cut, 64 matrices | {BEFORE['cut']} | {now} | {ablation} | {bound} |"
    )
    ablation = (
        f"compiled loop {_n(t.get('compiled_s'), 2)} s; `generate` + PyTorch cut {_n(t.get('plain_s'), 2)} s"
    )
    lines.append(
        f"| one optimize trial (100 × 64 refusals + 100 KL) | {BEFORE['trial']} | "
        f"{_n(t.get('fast_s'), 2)} s | {ablation} | |"
    )
    if rep:
        now = (
            f"{_n(rep.get('capture_speedup'), 2)}× / {_n(rep.get('generate_512x64_speedup'), 2)}× one card "
            "(512 prompts × 64)"
        )
        lines.append(
            f"| two GPUs, replicas (capture / generation) | – | {now} | 100 × 64: "
            f"{_n(rep.get('generate_100x64_speedup'), 2)}× | |"
        )
    if split:
        one = _n(split.get("capture_one_tok_s"))
        now = f"capture {_n(split.get('capture_split_tok_s'))} tok/s (one card {one})"
        ablation = (
            f"generation 20 × 32: {_n(split.get('generate_20x32_split_tok_s'))} tok/s (one card "
            f"{_n(split.get('generate_20x32_one_tok_s'))})"
        )
        lines.append(f'| two GPUs, `device="auto"` layer split | – | {now} | {ablation} | |')
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    rows: dict[str, Any] = {}
    for path in parser.parse_args().results:
        for section, values in json.loads(path.read_text()).items():
            if "error" not in values and "skipped" not in values:
                rows.setdefault(section, values)
    print(table(rows))


if __name__ == "__main__":
    main()
