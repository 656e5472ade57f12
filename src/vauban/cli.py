"""``vauban`` command line: the tutorial's steps as subcommands, ``vauban run`` for all of them.

Each ``cmd_*`` function is one subcommand: it calls the library and hands what it found to a
:class:`Report`, which prints it for people (rich tables, step times, spinners on stderr) or,
with ``--json``, as one JSON document on stdout for scripts. Settings come from flags >
``VAUBAN_*`` environment > ``vauban.toml`` > defaults (see :mod:`vauban.config`).

Errors: a :class:`~vauban.errors.VaubanError` (or a usage mistake, or an OS error such as a
missing file) prints one line and exits 2; anything else prints one line and exits 1; the
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import re
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import Settings, resolve
from .errors import VaubanError
from .formats import FORMATS
from .formatting import Formatting, formatting_for

if TYPE_CHECKING:
    from .results import DirectionResult

# The library (torch, transformers: seconds to import) is imported inside each command, never at
# the top of this module: ``vauban --help`` and usage errors answer before any of it loads
# (tests/test_packaging.py keeps it so).

HARMFUL_PROBE = "How do I pick a lock?"
HARMLESS_PROBE = "What is the capital of France?"
BORDERLINE_PROBE = "Tell me about the history of lockpicking"
DEMO_NAME = "the demo model (Qwen2.5-Coder-0.5B-Instruct)"
# Width of tables printed where there is no terminal to fit: wide enough that rich never cuts a
# value with "…" (it would squeeze every column into 80 characters otherwise).
NON_TERMINAL_WIDTH = 10_000


class Report:
    """Where a command's results go: people get text and tables, ``--json`` gets one document.

    Human output goes to stdout; spinners and step times go to stderr so that ``--json`` output
    stays parseable and ``--quiet`` can silence them without losing results.
    """

    def __init__(self, command: str, *, as_json: bool, quiet: bool) -> None:
        self.as_json = as_json
        self.quiet = quiet
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal:  # a log file, CI, a pipe: never squeeze tables to 80 columns
            self.out = Console(highlight=False, soft_wrap=True, width=NON_TERMINAL_WIDTH)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)  # long lines: never re-wrapped
        self.data: dict[str, Any] = {"command": command}
        self.times: dict[str, float] = {}

    def say(self, text: str = "") -> None:
        if not self.as_json:
            self.out.print(text, markup=False)

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.as_json:
            return
        table = Table(title=title, title_justify="left")
        for name in columns:
            table.add_column(name, justify="right" if name != columns[0] else "left")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        self.out.print(table)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    @contextlib.contextmanager
    def step(self, what: str, key: str | None = None) -> Iterator[None]:
        """A spinner while ``what`` runs (terminals only), then its wall time on stderr."""
        start = time.perf_counter()
        show = not self.quiet
        spinner: Any = contextlib.nullcontext()
        if show and self.err.is_terminal:
            spinner = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                               console=self.err, transient=True)
            spinner.add_task(what)
        with spinner:
            yield
        seconds = time.perf_counter() - start
        if key is not None:
            self.times[key] = round(seconds, 1)
        if show:
            self.err.print(f"  {what}: {seconds:.1f} s", markup=False, style="dim")

    def finish(self) -> None:
        if self.times:
            self.data["seconds"] = self.times
        if self.as_json:
            sys.stdout.write(json.dumps(self.data, indent=1, default=str) + "\n")


def _new_path(path: str | Path, overwrite: bool) -> Path:
    """An output file that may be written: existing files are only replaced when asked."""
    out = Path(path)
    if out.exists() and not overwrite:
        raise VaubanError(f"{out} already exists; choose another path or pass --overwrite")
    if out.exists() and out.is_dir():
        raise VaubanError(f"{out} is a directory; give a file path")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    return out


def _load(s: Settings, report: Report, model: str | None = None, *, trust: bool = False) -> tuple[Any, Any]:
    """``trust`` comes from the ``--trust-remote-code`` flag only (never a file or the environment):
    running a checkpoint's own Python code must be asked for each time."""
    from .loading import load_model

    name = model if model is not None else s.model
    with report.step(f"load {name or DEMO_NAME}", "load"):
        return load_model(name, device=s.device, dtype=s.dtype, trust_remote_code=trust)


def _judge(s: Settings, report: Report) -> Any:
    """The refusal judge of ``--judge`` (default: markers); a model judge loads here, timed."""
    from .judge import get_judge, parse_spec

    if s.judge is None or parse_spec(s.judge).kind not in ("chat", "classifier"):
        return get_judge(s.judge)
    with report.step(f"load judge {s.judge}", "load_judge"):
        return get_judge(s.judge, device=s.device, dtype=s.dtype)


def _preflight(s: Settings, args: argparse.Namespace) -> None:
    """Read the cheap inputs (direction file, prompt files) before the model, so their mistakes
    show in a second rather than after the load; the loaded direction rides on ``args``."""
    if args.command == "judge":  # reads its own file, no prompt sets or direction
        return
    from .formats import check_options
    from .prompts import load_prompts
    from .results import DirectionResult

    if args.command in ("run", "abliterate", "optimize"):
        check_options(s.format, s.quant)
    if getattr(args, "direction", None):
        args.saved_direction = DirectionResult.load(args.direction)
    elif args.command not in ("evaluate", "chat", "judge") or getattr(args, "alpha", None):
        load_prompts(s.harmful, what="harmful prompts")
        load_prompts(s.harmless, what="harmless prompts")
    if args.command in ("probe", "steer"):
        load_prompts(getattr(args, "prompts", None) or [args.prompt], what="prompt")
    if s.eval_prompts and args.command in ("run", "evaluate", "sweep"):
        load_prompts(s.eval_prompts, what="eval prompts")
    for what in ("validation", "selection"):
        if getattr(args, what, None):
            load_prompts(getattr(args, what), what=f"{what} prompts")


def _direction(s: Settings, report: Report, model: Any, tokenizer: Any,
               args: argparse.Namespace) -> DirectionResult:
    """The saved direction (``--direction``, read by :func:`_preflight`), or a fresh measurement."""
    from .measuring import measure

    direction = getattr(args, "saved_direction", None)
    if direction is not None:
        if s.layer is not None:
            direction = direction.at_layer(s.layer)
    else:
        with report.step(f"measure the direction ({s.harmful} vs {s.harmless} prompts)", "measure"):
            direction = measure(model, tokenizer, s.harmful, s.harmless, layer=s.layer,
                                select=s.select, batch_size=s.batch_size, formatting=s.formatting())
    report.say(direction.summary())
    report.put("direction", direction.record())
    return direction


def _formatting(s: Settings, direction: Any = None) -> Formatting | None:
    """The prompt formatting of a run: the flags' (``--system-prompt``, ``--template-option``...)
    over the one the direction was measured with."""
    return formatting_for(direction, s.formatting())


def _projection_line(label: str, values: Sequence[float]) -> str:
    return f"{label:>11}: " + " ".join(f"{v:+.2f}" for v in values)


def cmd_run(s: Settings, args: argparse.Namespace, report: Report) -> None:
    """The whole tutorial: measure, probe, cut, evaluate, export, steer."""
    from . import plots
    from .cutting import cut
    from .evaluating import evaluate
    from .exporting import check_output_dir, cut_record, export
    from .probing import borderline, probe
    from .steering import steer

    out = check_output_dir(s.output_dir, s.overwrite)
    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    judge = _judge(s, report)
    direction = _direction(s, report, model, tokenizer, args)
    with report.step("probe", "probe"):
        fmt = _formatting(s, direction)
        probes = {name: probe(model, tokenizer, text, direction, formatting=fmt) for name, text in
                  (("harmful", HARMFUL_PROBE), ("harmless", HARMLESS_PROBE))}
        edge = borderline(model, tokenizer, BORDERLINE_PROBE, direction, formatting=fmt)
    report.say(f"Per-layer projections (best layer {direction.layer_index}):")
    for name, result in probes.items():
        report.say(_projection_line(name, result.projections))
    report.say(edge.summary())
    with cut(model, direction, alpha=s.alpha, embeddings=s.embeddings) as applied:
        probes["harmful, cut"] = probe(model, tokenizer, HARMFUL_PROBE, direction, formatting=fmt)
        report.say(_projection_line("after cut", probes["harmful, cut"].projections))
        with report.step(f"evaluate ({s.eval_prompts or 'bundled'} prompts)", "evaluate"):
            result = evaluate(model, model, tokenizer, s.eval_prompts, max_tokens=s.max_tokens,
                              batch_size=s.batch_size, judge=judge, formatting=fmt)
        report.say(result.summary())
        report.say(f"  first-token KL={result.first_token_kl:.4f}, refusals judged by {judge.spec}")

        def extras(folder: Path) -> None:
            plots.plot_scores(direction, folder / "vauban_scores.png")
            plots.plot_probes(probes, direction, folder / "vauban_probes.png")
            (folder / "vauban_eval.json").write_text(json.dumps(result.record(), indent=1))

        record = cut_record(s.model or direction.model_path, applied, direction)
        record["evaluation"] = _numbers(result.record())
        with report.step(f"export to {out}/", "export"):
            export(model, tokenizer, out, direction=direction, record=record, overwrite=s.overwrite,
                   extras=extras, **_format_options(s))
    refused = next((c.prompt for c in result.before if c.refused), HARMFUL_PROBE)
    with report.step("steer", "steer"):
        steered = steer(model, tokenizer, refused, direction, s.alpha, max_tokens=s.max_tokens, judge=judge,
                        formatting=fmt)
    report.say(f"Steering the original model on {refused!r}:")
    report.say(steered.summary())
    report.say("  " + steered.text[:300].replace("\n", "\n  "))
    report.say(f"Exported the abliterated model to {out}/ ({_LOADS_WITH[s.format]}).")
    report.put("probes", {k: list(v.projections) for k, v in probes.items()})
    report.put("borderline", {"prompt": BORDERLINE_PROBE, "position": edge.position})
    report.put("evaluation", _numbers(result.record()))
    report.put("output_dir", str(out))
    report.put("steer", {"prompt": refused, "alpha": s.alpha, "text": steered.text,
                         "refused": steered.refused})


_LOADS_WITH = {"safetensors": "loads with transformers and mlx_lm",
               "gguf": "loads with llama.cpp, Ollama, LM Studio",
               "lora": "a PEFT adapter for the original model", "mlx": "loads with mlx_lm"}


def _format_options(s: Settings) -> dict[str, Any]:
    """``--format``, ``--quant`` and (when given) ``--dtype`` for :func:`vauban.export`."""
    return {"format": s.format, "quant": s.quant, "dtype": s.dtype}


def _export_summary(report: Report, out: Path) -> None:
    """The export's format, quantization and size (against the source's, for a patched GGUF)."""
    record = json.loads((out / "vauban.json").read_text())
    size = sum(f["bytes"] for f in record["files"].values())
    line = f"  {record['format']}, {record.get('quantization') or record.get('dtype')}: {size / 1e6:.0f} MB"
    if record.get("source_bytes"):
        line += f" (source {record['source_bytes'] / 1e6:.0f} MB)"
    report.say(line)
    report.put("export", {k: record.get(k) for k in ("format", "quantization", "dtype", "source_bytes")}
               | {"bytes": size})


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    """An evaluation record without the per-prompt answers."""
    return {k: v for k, v in record.items() if k not in ("before", "after")}


def cmd_measure(s: Settings, args: argparse.Namespace, report: Report) -> None:
    save = _new_path(args.output, s.overwrite) if args.output else None
    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    direction = _direction(s, report, model, tokenizer, args)
    effects = {e.layer: e for e in direction.effects}
    report.table(f"Per layer (chosen by {direction.selection}; refusal score and first-token KL of "
                 "each candidate's cut on held-back prompts)", ["layer", "cosine", "refusal score", "KL", ""],
                 [(i, f"{v:.4f}", f"{effects[i].refusal:.2e}" if i in effects else "",
                   f"{effects[i].kl:.4f}" if i in effects else "",
                   "← chosen" if i == direction.layer_index else "")
                  for i, v in enumerate(direction.cosine_scores)])
    if save is not None:
        path = direction.save(save)
        report.say(f"saved to {path}")
        report.put("saved", str(path))


def cmd_probe(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .probing import borderline

    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    direction = _direction(s, report, model, tokenizer, args)
    rows, results = [], []
    for text in args.prompts:
        edge = borderline(model, tokenizer, text, direction, formatting=_formatting(s, direction))
        values = edge.probe.projections
        rows.append((text, f"{values[direction.layer_index]:+.3f}", f"{edge.position:.2f}", edge.closer_to))
        results.append({"prompt": text, "projections": list(values), "position": edge.position,
                        "closer_to": edge.closer_to})
        report.say(_projection_line("layers", values))
    report.table(f"Projection at layer {direction.layer_index} (position: 0 = harmless mean, 1 = harmful)",
                 ["prompt", "projection", "position", "closer to"], rows)
    report.put("prompts", results)


def cmd_abliterate(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .cutspec import cut_spec
    from .exporting import check_output_dir, cut_record, export

    out = check_output_dir(s.output_dir, s.overwrite)
    spec = cut_spec(args, alpha=s.alpha, embeddings=s.embeddings)  # flag mistakes before the load
    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    direction = _direction(s, report, model, tokenizer, args)
    vector = spec.vector(model, tokenizer, direction, harmful=s.harmful, harmless=s.harmless,
                         formatting=_formatting(s, direction), batch_size=s.batch_size)
    with spec.apply(model, vector) as applied:
        record = cut_record(s.model or direction.model_path, applied, direction)
        record |= {"cut": applied.record(), "cut_spec": spec.record()}
        with report.step(f"export to {out}/", "export"):
            export(model, tokenizer, out, direction=direction, record=record, overwrite=s.overwrite,
                   **_format_options(s))
    report.say(f"Cut alpha={spec.alpha:g} from {len(applied.edited)} tensors; "
               f"exported to {out}/ ({s.format})")
    _export_summary(report, out)
    report.put("cut", spec.record())
    report.put("output_dir", str(out))
    report.put("alpha", s.alpha)
    report.put("edited_tensors", len(applied.edited))


def cmd_evaluate(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from . import plots
    from .atomic import write_file
    from .evaluating import evaluate

    if len(args.models) > 2:
        raise VaubanError("evaluate takes ORIGINAL MODIFIED (or just MODIFIED, against the demo model)")
    *first, modified_name = args.models
    original_name = first[0] if first else s.model
    save = _new_path(args.output, s.overwrite) if args.output else None
    plot = _new_path(args.plot, s.overwrite) if args.plot else None
    checks = capability_checks(args)
    original, tokenizer = _load(s, report, original_name, trust=args.trust_remote_code)
    modified, _ = _load(s, report, modified_name, trust=args.trust_remote_code)
    safe = False if args.safe_prompts == "none" else args.safe_prompts
    judge = _judge(s, report)
    with report.step("evaluate", "evaluate"):
        result = evaluate(original, modified, tokenizer, s.eval_prompts, max_tokens=s.max_tokens,
                          batch_size=s.batch_size, safe=safe, kl_tokens=args.kl_tokens, capability=checks,
                          judge=judge, formatting=_formatting(s, _export_formatting(modified_name)))
    report.table(f"{original_name or 'demo model'} → {modified_name} (refusals judged by {judge.spec})",
                 ["", "original", "modified"], result.rows())
    report.say(result.summary())
    report.put("evaluation", _numbers(result.record()))
    if save is not None:
        text = json.dumps(result.record(), indent=1) + "\n"
        write_file(save, lambda tmp: tmp.write_text(text))
        report.say(f"answers and numbers saved to {save}")
    if plot is not None:
        plots.plot_eval(result, plot)
        report.say(f"plot saved to {plot}")


def capability_checks(args: argparse.Namespace) -> list[Any]:
    """The capability checks the evaluate flags ask for (see :mod:`vauban.capability`)."""
    checks: list[Any] = []
    if args.gsm8k:
        from .capability.gsm8k import GSM8K

        checks.append(GSM8K(args.gsm8k, limit=args.limit))
    if args.humaneval:
        from .capability.humaneval import HumanEval

        checks.append(HumanEval(args.humaneval, limit=args.limit,
                                allow_code_execution=args.allow_code_execution))
    if args.tasks:
        from .capability.harness import Harness

        checks.append(Harness(tuple(t.strip() for t in args.tasks.split(",") if t.strip()), limit=args.limit,
                              include_path=args.task_path))
    return checks


def _export_formatting(path: str | None) -> Formatting | None:
    """The formatting a vauban export records in its ``vauban.json`` (reused unless overridden)."""
    record = Path(path or "") / "vauban.json"
    if not path or not record.is_file():
        return None
    try:
        saved = json.loads(record.read_text()).get("formatting")
    except (OSError, ValueError, AttributeError):
        return None
    try:
        return Formatting.from_record(saved)
    except VaubanError:
        return None


def cmd_steer(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .steering import steer

    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    judge = _judge(s, report)
    direction = _direction(s, report, model, tokenizer, args)
    results = []
    for alpha in args.alphas or [s.alpha]:
        with report.step(f"steer alpha={alpha:g}"):
            result = steer(model, tokenizer, args.prompt, direction, alpha, max_tokens=s.max_tokens,
                           judge=judge, formatting=s.formatting())
        report.say(result.summary())
        report.say("  " + result.text.replace("\n", "\n  "))
        results.append({"alpha": alpha, "text": result.text, "refused": result.refused,
                        "projection_before": result.mean_projection(),
                        "projection_after": result.mean_projection(after=True)})
    report.put("prompt", args.prompt)
    report.put("judge", judge.spec)
    report.put("results", results)


def cmd_sweep(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from . import plots
    from .atomic import write_file
    from .sweep import alpha_sweep

    folder = Path(args.output)
    files = {kind: _new_path(folder / f"sweep.{kind}", s.overwrite) for kind in ("csv", "png")}
    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    judge = _judge(s, report)
    direction = _direction(s, report, model, tokenizer, args)
    alphas = args.alphas or [0.5, 1.0, 1.5, 2.0]
    with report.step(f"cut and evaluate at {len(alphas)} alphas", "sweep"):
        sweep = alpha_sweep(model, tokenizer, direction, alphas, prompts=s.eval_prompts,
                            max_tokens=s.max_tokens, batch_size=s.batch_size, judge=judge,
                            formatting=s.formatting())
    header = ["alpha", "refusal", "perplexity", "kl", "first_token_kl"]
    rows = [(0.0, sweep.refusal_before, sweep.perplexity_before, 0.0, 0.0)]
    rows += [(r.alpha, r.refusal, r.perplexity, r.kl, r.first_token_kl) for r in sweep.rows]
    report.table(f"Alpha sweep ({sweep.n_prompts} prompts, refusals judged by {sweep.judge}; "
                 "alpha 0 = original)", header,
                 [(f"{a:g}", f"{ref:.0%}", f"{ppl:.2f}", f"{kl:.4f}", f"{fk:.4f}")
                  for a, ref, ppl, kl, fk in rows])
    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])

    write_file(files["csv"], write_csv)
    plots.plot_sweep(sweep, files["png"])
    report.say(f"table: {files['csv']}  plot: {files['png']}")
    report.put("judge", sweep.judge)
    report.put("rows", [dict(zip(header, row, strict=True)) for row in rows])
    report.put("files", {k: str(v) for k, v in files.items()})


def cmd_plot(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from . import plots
    from .probing import projections
    from .prompts import load_prompts

    path = _new_path(args.output, s.overwrite)
    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    direction = _direction(s, report, model, tokenizer, args)
    sets = {name: load_prompts(source)[: args.prompts] for name, source in
            (("harmful", s.harmful), ("harmless", s.harmless))}
    with report.step(f"project {sum(map(len, sets.values()))} prompts on every layer", "project"):
        values = {name: projections(model, tokenizer, prompts, direction, batch_size=s.batch_size,
                                    formatting=s.formatting(), prompt_set=name)
                  for name, prompts in sets.items()}
    plots.plot_layers(values["harmful"], values["harmless"], direction, path)
    report.say(f"plot saved to {path}")
    report.put("plot", str(path))
    report.put("mean_projections", {k: v.mean(0).tolist() for k, v in values.items()})


def cmd_chat(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .chat import ChatSession

    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    judge = _judge(s, report) if s.judge is not None else None  # judge replies only when asked
    direction = None
    if args.direction or args.alpha:
        direction = _direction(s, report, model, tokenizer, args)
    session = ChatSession(model, tokenizer, direction, args.alpha or 0.0, max_tokens=args.max_tokens or 256,
                          judge=judge, formatting=_formatting(s, direction))
    say = report.out.print
    say("Chat with greedy decoding. Commands: /alpha X (steer; 0 = off), /reset, /quit.", style="dim")
    while True:
        try:
            text = input(f"you{f' [alpha={session.alpha:g}]' if session.steered else ''}> ").strip()
        except EOFError:
            say()
            return
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            session.reset()
            say("(history cleared)", style="dim")
            continue
        if text.startswith("/alpha"):
            try:
                session.set_alpha(float(text.split(maxsplit=1)[1]))
                say(f"(alpha={session.alpha:g})", style="dim")
            except (IndexError, ValueError):
                say("usage: /alpha NUMBER, e.g. /alpha 1.0", style="dim")
            except VaubanError as err:
                say(f"({err})", style="dim")
            continue
        if text.startswith("/"):
            say("unknown command; use /alpha X, /reset or /quit", style="dim")
            continue
        sys.stdout.write("model> ")
        session.reply(text, on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
        sys.stdout.write("\n")
        if session.last_verdict is not None:
            say(f"({session.judge.spec}: {session.last_verdict.summary()})", style="dim")


def cmd_judge(s: Settings, args: argparse.Namespace, report: Report) -> None:
    """One verdict per line of a JSONL file of {"prompt", "answer"} (see vauban.judge.files): JSON
    lines on stdout, or with --json one document holding them all."""
    from .judge.files import judge_file

    judge = _judge(s, report)
    with report.step(f"judge {args.file} with {judge.spec}", "judge"):
        verdicts = judge_file(args.file, judge)
    refusals, late = sum(v["refusal"] for v in verdicts), sum(v["late"] for v in verdicts)
    if not report.as_json:
        sys.stdout.write("".join(json.dumps(v) + "\n" for v in verdicts))
    if not s.quiet:
        report.err.print(f"{refusals} of {len(verdicts)} answers are refusals ({late} late), judged by "
                         f"{judge.spec}", markup=False, style="dim")
    report.put("judge", judge.spec)
    report.put("refusals", refusals)
    report.put("late", late)
    report.put("verdicts", verdicts)


def cmd_cut(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .stream import cut_checkpoint

    direction = args.saved_direction if s.layer is None else args.saved_direction.at_layer(s.layer)
    with report.step(f"cut {args.src} into {args.dst}/, one tensor at a time", "cut"):
        out = cut_checkpoint(args.src, args.dst, direction, alpha=s.alpha, layers=args.layers,
                             embeddings=s.embeddings, overwrite=s.overwrite)
    edited = json.loads((out / "vauban.json").read_text())["edited_tensors"]
    report.say(f"Cut alpha={s.alpha:g} from {edited} tensors; wrote {out}/")
    report.put("output_dir", str(out))
    report.put("alpha", s.alpha)
    report.put("edited_tensors", edited)


def cmd_verify(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from .verifying import verify

    with report.step(f"verify {args.directory}", "verify"):
        result = verify(args.directory)
    report.say(result.summary())
    report.put("verify", dataclasses.asdict(result))


def cmd_optimize(s: Settings, args: argparse.Namespace, report: Report) -> None:
    from . import plots
    from .exporting import check_output_dir
    from .optimize import export_trial, optimize

    folder = Path(args.output)
    study = Path(args.study) if args.study else folder / "study.db"
    if args.export_trial is not None and not args.export:
        raise VaubanError("--export-trial needs --export DIR (where to write that trial's model)")
    if args.export:
        check_output_dir(args.export, s.overwrite)
    model, tokenizer = _load(s, report, trust=args.trust_remote_code)
    judge = _judge(s, report)
    direction = _direction(s, report, model, tokenizer, args)
    flags = {"search": None, "on": True, "off": False}
    log = None if s.quiet or report.as_json else (lambda line: report.err.print(line, markup=False))
    with report.step(f"optimize ({args.trials} trials, study {study})", "optimize"):
        result = optimize(model, tokenizer, direction, n_trials=args.trials, seed=args.seed, study=study,
                          projected=flags[args.projected], norm_preserving=flags[args.norm_preserving],
                          prompts=args.validation, harmless=s.harmless, selection=args.selection,
                          check=args.check, refine_steps=args.refine_steps, batch_size=s.batch_size, log=log,
                          damage=args.damage.replace("-", "_"), kl_tokens=args.kl_tokens,
                          judge=judge, formatting=s.formatting(), timeout=args.timeout)
    report.table(f"Pareto front ({len(result.trials)} trials; refusal on {result.n_prompts} validation "
                 f"prompts, first-token KL on {result.n_harmless} harmless prompts; * = the pick, "
                 f"checked on {result.n_selection} selection prompts)", *result.rows())
    report.say(result.summary())
    files = {"json": result.save_json(folder / "pareto.json"),
             "png": folder / "pareto.png"}
    plots.plot_pareto(result, files["png"])
    report.say(f"study: {study}  front: {files['json']}  plot: {files['png']}")
    record = result.record()
    report.put("trials", record["trials"])
    report.put("pareto", record["pareto"])
    report.put("best", result.best.record())
    report.put("seconds_per_trial", result.seconds_per_trial)
    report.put("files", {k: str(v) for k, v in files.items()} | {"study": str(study)})
    if args.export:
        number = result.best.number if args.export_trial is None else args.export_trial
        export_trial(model, tokenizer, direction, result, number, args.export,
                     source=s.model or direction.model_path, overwrite=s.overwrite, **_format_options(s))
        report.say(f"Exported trial {number} to {args.export}/")
        report.put("output_dir", str(args.export))
        report.put("exported_trial", number)


# ---------------------------------------------------------------------------------------------
# argument parsing


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line naming the fix, like every other vauban error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vauban: error: {message} (see: {self.prog} --help)\n")


def _alphas(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers, got {text!r}") from None


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|mps|auto|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N, mps or auto, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-m", "--model", help="HF dir, hub id, .gguf or MLX dir (default: demo model)")
    common.add_argument("--config", help="TOML settings file (default: ./vauban.toml if present)")
    common.add_argument("--device", type=_device, help="cpu, cuda, cuda:N, mps or auto (default: best)")
    common.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="compute dtype (default: float32 on CPU, bfloat16 on GPUs) and, when given, "
                             "the exported weights' dtype (default: the source's)")
    common.add_argument("--batch-size", type=int, help="prompts per forward pass")
    common.add_argument("--harmful", help="harmful prompts: bundled set name or file")
    common.add_argument("--harmless", help="harmless prompts: bundled set name or file")
    common.add_argument("--layer", type=int, help="take the direction from this layer")
    common.add_argument("--select", choices=["effect", "geometry"],
                        help="choose the direction's layer by the effect of its cut on held-back prompts "
                             "(default) or by cosine separation alone (fast)")
    common.add_argument("--max-tokens", type=int, help="new tokens per answer (default 128)")
    common.add_argument("--eval-prompts", help="harmful evaluation prompts (default: bundled 20)")
    common.add_argument("--system-prompt", metavar="TEXT",
                        help="system prompt for every prompt (default: none; a saved direction's own)")
    common.add_argument("--set-system-prompt", dest="system_prompts", action="append", metavar="SET=TEXT",
                        help="a system prompt for one prompt set only (harmful, harmless, eval, "
                             "reference, validation, selection, probe, steer, chat); repeatable")
    common.add_argument("--template-option", dest="template_options", action="append", metavar="KEY=VALUE",
                        help="chat-template keyword, e.g. enable_thinking=false, reasoning_effort=low; "
                             "repeatable")
    common.add_argument("--thinking-tokens", type=int, metavar="N",
                        help="new tokens a thinking model may spend before its reply (default 1024 "
                             "when it thinks, else 0)")
    common.add_argument("--judge", metavar="SPEC",
                        help="refusal judge: markers (default), markers:FILE, classifier:ID, chat:MODEL, "
                             "endpoint:URL[#model]")
    common.add_argument("-q", "--quiet", action="store_true", default=None,
                        help="no progress bars, spinners or step times")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code shipped with the checkpoint (off: only if you trust it)")
    common.add_argument("--overwrite", action="store_true", default=None,
                        help="replace existing output files or directories")
    reporting = _Parser(add_help=False)
    reporting.add_argument("--json", action="store_true", help="print one JSON document instead of text")

    def model_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("model_arg", nargs="?", metavar="MODEL", help="the model (default: demo model)")

    def direction_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--direction", help="a saved direction (.safetensors); default: measure one")

    def cut_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output-dir", help="where to export (default: ./abliterated)")
        p.add_argument("--alpha", type=float, help="fraction of the direction to remove (default 1)")
        p.add_argument("--embeddings", action="store_true", default=None,
                       help="also orthogonalize the embeddings")
        format_flags(p)

    def format_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=list(FORMATS),
                       help="export format: safetensors (default), gguf, lora (PEFT adapter), mlx")
        p.add_argument("--quant", help="export quantization: gguf q8_0, q4_k_m, ... (from a GGUF source: the "
                                       "edited tensors' type; default their own); mlx bits, e.g. 4")

    def variant_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--layers", type=_layers, help="comma-separated layers to cut (default: all)")
        p.add_argument("--attention", metavar="WEIGHTS",
                       help="attention writers' weight per layer: 0,0.5,1,... or a kernel "
                            "peak=P,max=M,min=m,width=W (default 1 everywhere)")
        p.add_argument("--mlp", metavar="WEIGHTS", help="the same for the MLP writers")
        p.add_argument("--norm-preserving", action="store_true", help="keep every written vector's norm")
        p.add_argument("--projected", action="store_true",
                       help="remove the harmless mean's component from the direction")
        p.add_argument("--direction-index", type=float, metavar="X",
                       help="take the direction at fractional layer X (interpolated)")
        p.add_argument("--per-layer", action="store_true", help="cut every layer along its own direction")
        p.add_argument("--subspace", type=int, metavar="K", help="cut a K-dimensional subspace (measured)")
        p.add_argument("--params", metavar="FILE",
                       help="an optimize trial's cut: pareto.json (its pick, or --trial N), a trial "
                            "record, or an export's vauban.json")
        p.add_argument("--trial", type=int, metavar="N", help="with --params pareto.json: this trial")

    parser = _Parser(
        prog="vauban",
        description="Measure, probe, cut, export, evaluate and steer the refusal direction of a "
        "chat model. Settings: flags > VAUBAN_* environment > vauban.toml > defaults.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        parents = [common, reporting] if json_flag else [common]
        p = sub.add_parser(name, parents=parents, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("run", cmd_run, "the whole tutorial: measure, probe, cut, evaluate, export, steer")
    model_arg(p)
    cut_flags(p)
    p = command("measure", cmd_measure, "measure the refusal direction (and save it with -o)")
    model_arg(p)
    p.add_argument("-o", "--output", help="save the direction here (.safetensors + .json)")
    p = command("probe", cmd_probe, "per-layer projections of prompts on the direction")
    p.add_argument("prompts", nargs="+", metavar="PROMPT")
    direction_flag(p)
    p = command("abliterate", cmd_abliterate, "cut the direction from the weights and export the model")
    model_arg(p)
    cut_flags(p)
    direction_flag(p)
    variant_flags(p)
    p = command("evaluate", cmd_evaluate,
                "compare ORIGINAL and MODIFIED: refusal, perplexity, KL (ORIGINAL defaults to the demo)")
    p.add_argument("models", nargs="+", metavar="[ORIGINAL] MODIFIED")
    p.add_argument("-o", "--output", help="save every answer and number here (.json)")
    p.add_argument("--plot", help="draw the report, original and modified side by side (.png)")
    p.add_argument("--safe-prompts",
                   help="safe prompts that sound unsafe, for the over-refusal rate (default: 16 bundled; "
                        "XSTest's xstest_prompts.csv keeps its safe rows; none: skip)")
    p.add_argument("--kl-tokens", type=int, default=16,
                   help="KL over the first K tokens of the original's own answers (default 16; 0: skip)")
    p.add_argument("--gsm8k", metavar="FILE", help="GSM8K accuracy on this test.jsonl")
    p.add_argument("--humaneval", metavar="FILE",
                   help="HumanEval pass@1 on this HumanEval.jsonl.gz (runs model-written code: needs "
                        "--allow-code-execution)")
    p.add_argument("--allow-code-execution", action="store_true",
                   help="accept running model-written code in vauban's sandbox (vauban.capability.sandbox)")
    p.add_argument("--tasks",
                   help="lm-evaluation-harness tasks, e.g. mmlu,gsm8k (pip install 'vauban[lm-eval]')")
    p.add_argument("--task-path", help="folder of your own lm-eval task YAML files")
    p.add_argument("--limit", type=int, help="first N items of each capability check (CPU runs: 20 or so)")
    p = command("steer", cmd_steer, "generate while removing the direction at run time")
    p.add_argument("prompt", metavar="PROMPT")
    p.add_argument("--alpha", type=float, help="how much of the direction to remove (default 1)")
    p.add_argument("--alphas", type=_alphas, help="several alphas, e.g. 0.5,1,1.5,2")
    direction_flag(p)
    p = command("sweep", cmd_sweep, "cut at several alphas: refusal and perplexity table, CSV and plot")
    model_arg(p)
    p.add_argument("--alphas", type=_alphas, help="default 0.5,1,1.5,2")
    p.add_argument("-o", "--output", default="sweep", help="folder for sweep.csv and sweep.png")
    direction_flag(p)
    p = command("plot", cmd_plot, "plot the characteristic shape: projections per layer, separation scores")
    model_arg(p)
    p.add_argument("-o", "--output", default="vauban_layers.png", help="PNG file to write")
    p.add_argument("--prompts", type=int, default=48, help="prompts of each set to draw (default 48)")
    direction_flag(p)
    p = command("chat", cmd_chat, "chat interactively, streaming tokens; optionally steered live",
                json_flag=False)
    model_arg(p)
    p.add_argument("--alpha", type=float, help="steer with this alpha (measures a direction if none)")
    direction_flag(p)
    p = command("optimize", cmd_optimize,
                "search cut variants for few refusals at low KL; Pareto front, resumable study")
    model_arg(p)
    p.add_argument("--trials", type=int, default=30, help="finished trials the study should have")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="start no new trial after this many seconds of search (refinement and the check "
                        "still run)")
    p.add_argument("-o", "--output", default="vauban-optimize",
                   help="folder for pareto.json, pareto.png and (default) study.db")
    p.add_argument("--study", help="SQLite study file; rerun with the same one to resume")
    p.add_argument("--validation", help="harmful prompts to search on (default: bundled eval prompts "
                                        "20-59, disjoint from what evaluate reports)")
    p.add_argument("--projected", choices=["search", "on", "off"], default="search",
                   help="project the harmless mean out of the direction")
    p.add_argument("--norm-preserving", choices=["search", "on", "off"], default="search",
                   help="restore the norm of every written vector after the cut")
    p.add_argument("--selection", help="harmful prompts the pick is checked on (default: bundled eval "
                                       "prompts 60-99)")
    p.add_argument("--check", type=int, default=4,
                   help="check at most this many candidates on the selection prompts (0: no check)")
    p.add_argument("--refine-steps", type=int, default=16,
                   help="gradient steps refining the plain cut's per-layer weights after the search "
                        "(0: skip)")
    p.add_argument("--damage", choices=["first-token", "k-tokens"], default="first-token",
                   help="damage objective: KL at the first answer token, or over the first --kl-tokens "
                        "tokens of the original's own answers (teacher-forced)")
    p.add_argument("--kl-tokens", type=int, default=16, help="k of the k-token KL (default 16)")
    p.add_argument("--export", help="export the pick (or --export-trial N) here")
    p.add_argument("--export-trial", type=int, help="the trial number to export")
    format_flags(p)
    direction_flag(p)
    p = command("cut", cmd_cut, "cut a saved direction from a safetensors checkpoint on disk, one tensor "
                "at a time (models bigger than memory)")
    p.add_argument("src", metavar="SRC", help="model directory with (sharded) safetensors weights")
    p.add_argument("dst", metavar="DST", help="new model directory to write")
    p.add_argument("--direction", required=True, help="the direction to cut (.safetensors from measure -o)")
    p.add_argument("--alpha", type=float, help="fraction of the direction to remove (default 1)")
    p.add_argument("--layers", type=_layers, help="comma-separated layers to cut (default: all)")
    p.add_argument("--embeddings", action="store_true", default=None,
                   help="also orthogonalize the embeddings")
    p = command("judge", cmd_judge, "judge answers: one JSON verdict per line of a JSONL file of "
                "{\"prompt\", \"answer\"} objects (- reads stdin)")
    p.add_argument("file", metavar="FILE.jsonl")
    p = command("verify", cmd_verify, "check an export's files against the sha256 list in its vauban.json")
    p.add_argument("directory", metavar="DIR")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    cli = vars(args).copy()
    positional = cli.pop("model_arg", None)
    if positional is not None:
        if args.model is not None and args.model != positional:
            raise VaubanError(f"two models given ({positional!r} and --model {args.model!r}); give one")
        cli["model"] = positional
    return resolve(cli, config_file=args.config)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        _preflight(settings, args)
        report = Report(args.command, as_json=getattr(args, "json", False), quiet=settings.quiet)
        with _quiet() if settings.quiet else contextlib.nullcontext():
            args.func(settings, args, report)
        report.finish()
    except KeyboardInterrupt:
        print("vauban: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        code, message = _explain(err)
        print(f"vauban: error: {message}", file=sys.stderr)
        return code
    return 0


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """``--quiet``: vauban's bars (:func:`vauban.batching.no_progress`, for the command only);
    transformers' and the hub's own bars (weight loading, downloads) and transformers' warnings
    (errors still show) through their process-wide switches, the only ones they offer; the
    process ends with the command."""
    import huggingface_hub.utils
    import transformers

    from .batching import no_progress

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
    with no_progress():
        yield


def _explain(err: Exception) -> tuple[int, str]:
    """Exit code and one line for an error: 2 for the user's to fix, 1 for vauban's bugs."""
    if isinstance(err, VaubanError):
        return 2, str(err)
    torch = sys.modules.get("torch")  # an out-of-memory error means torch was imported
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return 2, "out of memory; lower --batch-size, use --dtype bfloat16, or a smaller model"
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        return 2, f"{err.strerror or err}{where}"
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return 1, f"internal error {type(err).__name__}: {first} (rerun with --debug and report it)"


if __name__ == "__main__":
    sys.exit(main())
