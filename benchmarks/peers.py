"""vauban and heretic side by side on the demo model: same prompts, same budget, two yardsticks (issue 14).

heretic (``heretic-llm`` 1.4.0, AGPL-3.0) is installed into its own virtual environment in the
work folder and run as a separate program: nothing of it is imported here. Stages, each
resumable on its own (``--stage NAME``; ``all`` runs them in order and skips finished ones):

- ``install``: ``WORK/venv`` with ``heretic-llm==1.4.0``, torch held to the CPU wheel on this
  disk (``torch==2.13.0`` as a constraint) so pip does not fetch a CUDA build.
- ``data``: plain-text prompt files standing in for heretic's Hub datasets (which are
  unreachable here), split so that no tool searches on what is reported:

  ======================  ==============================================  =====================
  file                    what                                            heretic's default
  ======================  ==============================================  =====================
  harmful_report.txt      100 AdvBench goals, ``random.Random(0).sample``  (the reported set)
                          (the same sample ``optimize_demo.py`` reports)
  harmful_train.txt       320 of the other AdvBench goals                  harmful_behaviors
                                                                           train[:400]
  harmful_search.txt      the last 100 other AdvBench goals                harmful_behaviors
                                                                           test[:100]
  harmless_train.txt      400 instructions from ``peers_harmless.py``      harmless_alpaca
                                                                           train[:400]
  harmless_search.txt     100 more                                         harmless_alpaca
                                                                           test[:100]
  harmless_report.txt     100 more (the reported KL set)                   (the reported set)
  ======================  ==============================================  =====================

  heretic's search counts refusals and KL on its *evaluation* prompts; here those are the
  ``*_search`` files, and the ``*_report`` files are only used afterwards, for every model.
- ``heretic``: the search, seeded, on CPU, in a terminal (tmux, ``peers_tmux.py``: heretic asks
  through interactive menus), stopped with Ctrl+C at ``--budget`` seconds of wall time (the
  budget ``vauban optimize`` gets); heretic then lists its Pareto front itself, and the trial
  with the fewest refusals (its first) is saved merged, all in the same heretic process.
- ``vauban``: ``vauban abliterate`` (the one-command default) and ``vauban optimize`` (its pick
  exported), each timed.
- ``evaluate``: every export and the original on the report prompts, by vauban's evaluation
  and by heretic's own (``heretic --model BASE --evaluate-model EXPORT``); writes
  ``benchmarks/results/peers_demo.json``. Runs alone from the saved exports.
- ``frontier``: trials of vauban's search front measured by vauban's yardstick, as the picks
  are (``peers_frontier.py``): where heretic's pick sits against vauban's trade-off curve.

    nice -n 5 python benchmarks/peers.py --stage all
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from demo_inputs import ADVBENCH, advbench_sample
from peers_common import HERE, SEED, demo_dir, heretic_common, run_logged, say
from provenance import stamp

HERETIC = "heretic-llm==1.4.0"
TORCH = "torch==2.13.0"
BUDGET = 2700.0  # wall seconds each tool gets for its search (45 min)
TRIAL_MENU = r"Which trial do you want to use\?"  # heretic's Pareto-front menu
# of optimize's budget, outside its --timeout (which covers search and refinement): loading, measuring,
# the check of the pick and the export; at most 274 s in the run at dfc1621 (3,157 s in all, less the
# 2,100 s timeout and 783 s of refinement), with a margin
RESERVE = 400.0


# ---------------------------------------------------------------- install
def install(work: Path) -> Path:
    venv = work / "venv"
    heretic = venv / "bin" / "heretic"
    if heretic.exists():
        return heretic
    say(f"installing {HERETIC} into {venv} (CPU torch held by a constraint)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints = work / "constraints.txt"
    constraints.write_text(TORCH + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-c", str(constraints), HERETIC], check=True)
    return heretic


# ---------------------------------------------------------------- data
def write_data(work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from peers_harmless import harmless_prompts
    from vauban.text.prompts import load_prompts

    goals = load_prompts(str(ADVBENCH))
    report = advbench_sample(100, SEED)
    chosen = set(report)
    rest = [g for g in goals if g not in chosen]
    harmless = harmless_prompts(SEED)
    sets = {
        "harmful_report": report,
        "harmful_train": rest[:320],
        "harmful_search": rest[-100:],
        "harmless_train": harmless[:400],
        "harmless_search": harmless[400:500],
        "harmless_report": harmless[500:600],
    }
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, prompts in sets.items():
        assert all("\n" not in p for p in prompts)
        files[name] = folder / f"{name}.txt"
        files[name].write_text("\n".join(prompts) + "\n")
    return files


# ---------------------------------------------------------------- heretic
def vauban_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vauban.cli", *args]


def child_env() -> dict[str, str]:
    """This checkout's vauban first on the path of every child process."""
    src = str(HERE.parent / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def run_vauban(
    work: Path, budget: float, runs: tuple[str, ...] = ("vauban_default", "vauban_optimize")
) -> dict:
    """``vauban abliterate`` (the one-command default) and ``vauban optimize`` (pick exported),
    timed. optimize gets the wall-time budget: up to 200 trials, with ``--timeout budget -
    RESERVE`` seconds for search and refinement together (refinement gets the last third), so
    that loading, measuring, checking the pick and exporting fit in the rest (its total wall time
    is recorded, and heretic gets ``budget``)."""
    exports = work / "exports"
    times_file = work / "vauban_times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    commands = {
        "vauban_default": ["abliterate", "-o", str(exports / "vauban_default"), "--overwrite"],
        "vauban_optimize": [
            "optimize",
            "-o",
            str(work / "optimize"),
            "--trials",
            "200",
            "--seed",
            str(SEED),
            "--timeout",
            str(round(budget - RESERVE)),
            "--export",
            str(exports / "vauban_optimize"),
            "--overwrite",
        ],
    }
    for name, args in commands.items():
        if name not in runs or (name in times and (exports / name / "vauban.json").is_file()):
            continue
        if name == "vauban_optimize" and (work / "optimize").exists():
            shutil.rmtree(work / "optimize")  # a fresh study, so the wall time is the whole search
        rc, seconds = run_logged(vauban_cli(*args), work / f"{name}.log", env=child_env())
        if rc != 0:
            raise SystemExit(f"vauban {args[0]} failed (rc {rc}); see {work / f'{name}.log'}")
        times[name] = {"command": "vauban " + " ".join(args), "seconds": round(seconds, 1), **stamp()}
        if name == "vauban_optimize":
            trials = json.loads((work / "optimize" / "pareto.json").read_text())["trials"]
            refined = sum(isinstance(t["cut"]["attention"], list) for t in trials)
            times[name] |= {
                "trials": len(trials) - refined,
                "refined_trials": refined,
                "budget_seconds": budget,
                "timeout_seconds": round(budget - RESERVE),
            }
        times_file.write_text(json.dumps(times, indent=2) + "\n")
        say(f"{name}: {seconds:.0f} s")
    return times


def sample_load(log: Path, every: float = 60.0) -> None:
    """Append the load average to ``log`` every minute while this process runs (a daemon thread):
    the searches are timed, so the report says how quiet the machine was."""
    import threading

    def loop() -> None:
        while True:
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            with log.open("a") as out:
                out.write(f"{time.strftime('%H:%M:%S')} {load}\n")
            time.sleep(every)

    threading.Thread(target=loop, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(HERE / ".peers"), help="work folder (venv, data, exports)")
    parser.add_argument(
        "--stage",
        default="all",
        choices=["all", "install", "data", "heretic", "vauban", "evaluate", "frontier", "report"],
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=BUDGET,
        help="wall seconds each tool's search gets (default %(default)s)",
    )
    parser.add_argument(
        "--vauban-runs",
        default="vauban_default,vauban_optimize",
        help="which vauban runs the vauban stage makes (comma-separated)",
    )
    parser.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="WORK",
        help="report: also a later optimize run's work folder (its wall time and pick)",
    )
    parser.add_argument(
        "--frontier-trials",
        type=int,
        default=6,
        help="front trials of vauban's search that the frontier stage measures (default %(default)s)",
    )
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    heretic = install(work)
    files = write_data(work)
    if args.stage in ("all", "vauban", "heretic"):
        sample_load(work / "loadavg.log")
    if args.stage in ("all", "vauban"):
        run_vauban(work, args.budget, tuple(args.vauban_runs.split(",")))
    if args.stage in ("all", "heretic"):
        run_heretic(heretic, files, work, args.budget)
    if args.stage in ("all", "evaluate"):
        from peers_evaluate import evaluate_all

        evaluate_all(heretic, files, work)
    if args.stage in ("all", "frontier"):
        from peers_common import model_dirs
        from peers_evaluate import gather
        from peers_frontier import measure_front, measure_variants

        measure_front(work, files, args.frontier_trials)
        measure_variants(work, files)
        gather(work, work / "eval", model_dirs(work))
    if args.stage == "report":  # gather what has been measured so far, measure nothing
        from peers_common import model_dirs
        from peers_evaluate import gather

        gather(work, work / "eval", model_dirs(work), tuple(Path(f) for f in args.rerun))


def run_heretic(heretic: Path, files: dict[str, Path], work: Path, budget: float) -> None:
    """heretic's search for ``budget`` wall seconds, then its own trial menu and merged export.

    heretic runs in a terminal (``peers_tmux``): at the budget it gets Ctrl+C, which in heretic
    stops the study (the running trial is dropped) and opens the Pareto-front menu in the same
    process; the trial with the fewest refusals on its search prompts (heretic lists them sorted
    so, ties by KL) is chosen and saved merged to ``WORK/exports/heretic``."""
    from peers_tmux import Terminal

    for old in (work / "checkpoints", work / "exports" / "heretic"):
        shutil.rmtree(old, ignore_errors=True)  # a fresh study: the wall time is the whole search
    log = work / "heretic_search.log"
    cmd = [
        str(heretic),
        "--model",
        str(demo_dir()),
        *heretic_common(files, "search"),
        "--study-checkpoint-dir",
        str(work / "checkpoints"),
        "--n-trials",
        "200",
        "--export-strategy",
        "MERGE",
    ]
    term = Terminal("vauban-peers-heretic", log)
    say(f"run in tmux: {' '.join(cmd)} > {log}")
    start = time.perf_counter()
    term.start(cmd, env={"PYTHONUNBUFFERED": "1"})
    menu = term.wait_for(TRIAL_MENU, budget, every=10)
    if menu is None:
        term.keys("C-c")  # stop the study; heretic opens its trial menu
    seconds = time.perf_counter() - start
    record = {
        "command": cmd,
        "budget_seconds": budget,
        "seconds": round(seconds, 1),
        **stamp(),
        "stopped": "finished its trials" if menu else "Ctrl+C at the budget",
    }
    if not term.wait_for(TRIAL_MENU, 300):
        record |= {"trials": 0, "screen": term.screen()[-2000:]}
    else:
        time.sleep(2)
        record["pareto_front"] = [c for c in term.menu(TRIAL_MENU) if "Trial" in c]
        record["trials"] = finished_trials(heretic, work / "checkpoints")
        record["chosen"] = term.choose(TRIAL_MENU, r"\[Trial")
        export_start = time.perf_counter()
        term.choose(r"What do you want to do with the decensored model\?", "Save the model to a local folder")
        term.wait_for(r"Path to the folder", 120)
        term.type_line(str(work / "exports" / "heretic"))
        if not term.wait_for(r"(?s)Saving merged model.*What do you want to do", 1800, every=5):
            raise SystemExit(f"heretic's export did not finish; screen:\n{term.screen()}")
        record["export_seconds"] = round(time.perf_counter() - export_start, 1)
    term.stop()
    (work / "heretic_search.json").write_text(json.dumps(record, indent=2) + "\n")
    say(f"heretic: {record['trials']} trials in {seconds:.0f} s; chosen {record.get('chosen')}")


def finished_trials(heretic: Path, checkpoints: Path) -> int:
    """Completed trials in heretic's checkpointed Optuna journal(s), read with the Optuna of
    heretic's venv (Optuna's own API; nothing of heretic is used)."""
    code = (
        "import sys, optuna\n"
        "from optuna.storages import JournalStorage\n"
        "from optuna.storages.journal import JournalFileBackend\n"
        "n = 0\n"
        "for path in sys.argv[1:]:\n"
        "    storage = JournalStorage(JournalFileBackend(path))\n"
        "    for summary in optuna.get_all_study_summaries(storage):\n"
        "        study = optuna.load_study(study_name=summary.study_name, storage=storage)\n"
        "        n += sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)\n"
        "print(n)\n"
    )
    journals = [str(p) for p in checkpoints.glob("*.jsonl") if p.stat().st_size > 0]
    if not journals:
        return 0
    out = subprocess.run(
        [str(heretic.parent / "python"), "-c", code, *journals], capture_output=True, text=True, check=False
    )
    return int(out.stdout.strip() or 0)


if __name__ == "__main__":
    main()
