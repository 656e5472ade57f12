"""``vauban`` command line: the tutorial's steps as subcommands, ``vauban run`` for all of them.

Each ``cmd_*`` function is one subcommand (``commands_*.py``, grouped by pipeline step: measure,
cut, evaluate, steer, run); :mod:`.parser` builds the arguments. A command calls the library and
hands what it found to a :class:`Report`, which prints it for people (rich tables, step times,
spinners on stderr) or, with ``--json``, as one JSON document on stdout for scripts. Settings
come from flags > ``VAUBAN_*`` environment > ``vauban.toml`` > defaults (see :mod:`vauban.config`).

Errors: a :class:`~vauban.core.errors.VaubanError` (or a usage mistake, or an OS error such as a
missing file) prints one line and exits 2; anything else prints one line and exits 1; the
traceback only with ``--debug``.

The library (torch, transformers: seconds to import) is imported inside each command, never at
the top of these modules: ``vauban --help`` and usage errors answer before any of it loads
(tests/test_packaging.py keeps it so).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from collections.abc import Iterator, Sequence

from ..config import Settings, resolve
from ..core.errors import VaubanError
from .common import preflight
from .parser import build_parser
from .report import Report

__all__ = ["Report", "build_parser", "main"]


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
        preflight(settings, args)
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
    """``--quiet``: vauban's bars (:func:`vauban.core.progress.no_progress`, for the command only);
    transformers' and the hub's own bars (weight loading, downloads) and transformers' warnings
    (errors still show) through their process-wide switches, the only ones they offer; the
    process ends with the command."""
    import huggingface_hub.utils
    import transformers

    from ..core.progress import no_progress

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
