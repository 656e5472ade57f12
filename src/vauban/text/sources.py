"""Prompt sources held in datasets: a Hugging Face Hub dataset, a local dataset directory, parquet.

:func:`vauban.text.prompts.load_prompts` dispatches here; the syntax, the same for every prompt
argument (``harmful=``, ``--eval-prompts``, ``--validation``...)::

    hf:ID[@CONFIG][:SPLIT[:COLUMN]]   a Hub dataset, e.g. hf:walledai/AdvBench:train:prompt
    DIR[:SPLIT[:COLUMN]]              a local dataset: save_to_disk output, or a folder of data files
    FILE.parquet[:COLUMN]             parquet (FILE.jsonl / .json / .csv take :FIELD the same way)

``SPLIT`` defaults to ``train`` (or the only split), ``COLUMN`` to the first of ``prompt``,
``goal``, ``instruction``, ``question``, ``text``, ``behavior`` that the data has. Hub datasets
and dataset directories need the ``datasets`` package, parquet needs ``pyarrow``
(``pip install 'vauban[datasets]'`` brings both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..core.errors import VaubanError

TEXT_KEYS = ("prompt", "goal", "instruction", "question", "text", "behavior")
_EXTRA = "pip install 'vauban[datasets]'"


def pick_column(columns: Iterable[str], column: str | None, where: str) -> str:
    """``column`` if the data has it, else the first known prompt column it has."""
    names = list(columns)
    if column is not None:
        if column not in names:
            raise VaubanError(f"{where} has no column {column!r}; its columns: {names}")
        return column
    lowered = {n.lower(): n for n in names}
    found = next((lowered[k] for k in TEXT_KEYS if k in lowered), None)
    if found is None:
        raise VaubanError(f"{where}: no prompt column among {names}; name one, e.g. {where}:{names[0]}")
    return found


def texts(values: Iterable[Any], where: str) -> list[str]:
    """Non-empty strings of a column, with the row of any bad value named."""
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise VaubanError(
                f"{where} row {i}: expected text, got {type(value).__name__}; pick a text column"
            )
        if value.strip():
            out.append(value.strip())
    return out


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise VaubanError(f"Hub and local datasets need the datasets package: {_EXTRA}") from None
    datasets.disable_progress_bars()  # stderr is for vauban's own progress and one-line errors
    return datasets


def parquet_prompts(path: Path, column: str | None) -> list[str]:
    """The prompts in one column of a parquet file."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise VaubanError(f"parquet prompt files need pyarrow: {_EXTRA}") from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow's ArrowInvalid and friends
        raise VaubanError(f"cannot read {path} as parquet ({type(err).__name__}: {err})") from None
    name = pick_column(table.column_names, column, str(path))
    return texts(table.column(name).to_pylist(), f"{path}:{name}")


def _split_of(data: Any, split: str | None, where: str) -> Any:
    if not isinstance(data, Mapping):  # a single Dataset
        return data
    splits = list(data)
    chosen = split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
    if chosen not in splits:
        raise VaubanError(f"{where} has splits {splits}; name one, e.g. {where}:{splits[0]}")
    return data[chosen]


def _column_prompts(data: Any, column: str | None, where: str) -> list[str]:
    name = pick_column(data.column_names, column, where)
    return texts(data[name], f"{where}:{name}")


def hub_prompts(spec: str) -> list[str]:
    """``ID[@CONFIG][:SPLIT[:COLUMN]]`` from the Hugging Face Hub (or its local cache)."""
    ident, _, rest = spec.partition(":")
    split, _, column = rest.partition(":")
    name, _, config = ident.partition("@")
    if not name:
        raise VaubanError("hf: needs a dataset id, e.g. hf:walledai/AdvBench:train:prompt")
    datasets = _datasets()
    try:
        data = datasets.load_dataset(name, config or None, split=split or None)
    except Exception as err:  # the Hub's, the network's and datasets' own errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise VaubanError(f"cannot load dataset {name!r} from the Hub ({first})") from None
    return _column_prompts(_split_of(data, split or None, f"hf:{ident}"), column or None, f"hf:{ident}")


def directory_prompts(path: Path, split: str | None, column: str | None) -> list[str]:
    """A local dataset: ``save_to_disk`` output (``dataset_info.json`` / ``dataset_dict.json``),
    or a folder of parquet/jsonl/csv data files (as a Hub dataset repository holds them)."""
    saved = any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))
    data_files = [p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".csv", ".arrow")]
    if not saved and not data_files:
        raise VaubanError(
            f"{path} is a directory without a dataset (no save_to_disk files, no .parquet/"
            ".jsonl/.csv data); pass a dataset directory or a prompt file"
        )
    datasets = _datasets()
    try:
        data = datasets.load_from_disk(str(path)) if saved else datasets.load_dataset(str(path))
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise VaubanError(f"cannot read the dataset directory {path} ({first})") from None
    return _column_prompts(_split_of(data, split, str(path)), column, str(path))
