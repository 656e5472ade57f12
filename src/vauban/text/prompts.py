"""Prompt sets: the bundled ones, user lists, files and datasets; chat formatting's entry point.

Wherever vauban takes prompts it accepts a list of strings, the name of a bundled set, or a
source written as one string:

- ``FILE.txt`` (one prompt per line);
- ``FILE.jsonl`` / ``FILE.json`` / ``FILE.csv`` / ``FILE.parquet``, optionally ``:FIELD`` to
  choose the field or column (default: the first of ``prompt``, ``goal``, ``instruction``,
  ``question``, ``text``, ``behavior``; AdvBench's CSV works as it is);
- ``DIR[:SPLIT[:COLUMN]]``: a local dataset (``save_to_disk`` output or a folder of data files);
- ``hf:ID[@CONFIG][:SPLIT[:COLUMN]]``: a Hugging Face Hub dataset (:mod:`vauban.text.sources`).

How prompts are formatted for the model is :mod:`vauban.text.formatting`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import VaubanError
from ..core.textfiles import json_lines, parse_json, read_text
from .formatting import Formatting, chat_template, chat_texts
from .sources import TEXT_KEYS as _TEXT_KEYS
from .sources import directory_prompts, hub_prompts, parquet_prompts, pick_column

BUNDLED = (
    "harmful",
    "harmless",
    "eval_harmful",
    "reference",
    "borderline",
    "over_refusal",
    "harmful_categories",
    "eval_categories",
    "test_categories",
    "conditions",
    "multilingual",
)

Prompts = str | os.PathLike[str] | Sequence[str]


def bundled_records(name: str) -> list[dict[str, Any]]:
    """The records of a bundled set (``harmful``, ``harmless``, ``eval_harmful``, ...)."""
    if name not in BUNDLED:
        raise VaubanError(f"no bundled prompt set {name!r}; choose one of {', '.join(BUNDLED)}")
    text = resources.files("vauban").joinpath("data", f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _text_of(record: Any, where: str, field: str | None = None) -> str:
    text = record if isinstance(record, str) and field is None else None
    if isinstance(record, dict):
        keys = (field,) if field is not None else _TEXT_KEYS
        text = next((record[k] for k in keys if isinstance(record.get(k), str)), None)
    if text is None:
        wanted = repr(field) if field is not None else f"a {_TEXT_KEYS[0]!r}"
        raise VaubanError(f"{where}: no prompt text (expected a string or {wanted} field)")
    if not text.strip():
        raise VaubanError(f"{where}: the prompt is empty; remove it")
    return text


def read_jsonl(path: Path) -> list[Any]:
    """The records of a JSON Lines file, with file:line in any error."""
    return [record for _, record in json_lines(_read_text(path), path)]


def _read_text(path: Path) -> str:
    text = read_text(path)
    if "\x00" in text:
        raise VaubanError(f"{path} holds NUL bytes, so it is binary, not a prompt file; pass a text file")
    return text


def _read_file(path: Path, field: str | None = None) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return parquet_prompts(path, field)
    text = _read_text(path)
    if suffix == ".txt":
        if field is not None:
            raise VaubanError(f"{path}: a .txt file has one prompt per line, no fields; drop :{field}")
        return [line.strip() for line in text.splitlines() if line.strip()]
    if suffix == ".jsonl":
        return [_text_of(r, f"{path}:{n}", field) for n, r in json_lines(text, path)]
    if suffix == ".json":
        data = parse_json(text, str(path))
        if not isinstance(data, list):
            raise VaubanError(f"{path}: expected a JSON list of prompts")
        return [_text_of(item, f"{path}[{i}]", field) for i, item in enumerate(data)]
    if suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))  # quoted fields may hold newlines
        if not rows:
            return []
        header = [h.strip().lower() for h in rows[0]]
        column = (
            header.index(pick_column(header, field.lower(), str(path)))
            if field is not None
            else next((header.index(k) for k in _TEXT_KEYS if k in header), None)
        )
        body = rows[1:] if column is not None else rows
        short = next(
            (
                n
                for n, row in enumerate(body, start=2 if column is not None else 1)
                if row and len(row) <= (column or 0)
            ),
            None,
        )
        if short is not None:
            raise VaubanError(f"{path}: row {short} has no column {header[column or 0]!r}; fix that row")
        return [row[column or 0].strip() for row in body if row and row[column or 0].strip()]
    raise VaubanError(
        f"{path}: unsupported prompt file type {suffix!r}; use .txt, .jsonl, .json, .csv or .parquet"
    )


def _located(source: str) -> tuple[Path, list[str]] | None:
    """The longest ``:``-separated prefix of ``source`` that exists, and the selectors after it
    (``data.parquet:goal`` → ``data.parquet``, ``["goal"]``); None when nothing exists."""
    parts = source.split(":")
    for cut in range(len(parts), 0, -1):
        path = Path(":".join(parts[:cut])).expanduser()
        if path.exists():
            return path, parts[cut:]
    return None


def _read_source(source: str | os.PathLike[str], what: str) -> list[str]:
    text = str(source)
    if text.startswith("hf:"):
        return hub_prompts(text[3:])
    found = _located(text)
    if found is None:
        raise VaubanError(
            f"{what}: {text!r} is neither a bundled set ({', '.join(BUNDLED)}) nor a file or "
            "dataset; pass a list of strings, a set name, FILE[:FIELD], DIR[:SPLIT[:COLUMN]] or "
            "hf:ID[:SPLIT[:COLUMN]]"
        )
    path, selectors = found
    if path.is_dir():
        if len(selectors) > 2:
            raise VaubanError(f"{what}: {text!r} has too many ':' parts; use DIR[:SPLIT[:COLUMN]]")
        split, column = [*selectors, None, None][:2]
        return directory_prompts(path, split or None, column or None)
    if len(selectors) > 1:
        raise VaubanError(f"{what}: {text!r} has too many ':' parts; use FILE[:FIELD]")
    return _read_file(path, selectors[0] if selectors and selectors[0] else None)


def load_prompts(source: Prompts, *, what: str = "prompts") -> list[str]:
    """Resolve ``source`` to a validated, non-empty list of prompt strings (see the module
    docstring for the sources)."""
    if isinstance(source, str) and source in BUNDLED:
        prompts = [_text_of(r, source) for r in bundled_records(source)]
    elif isinstance(source, (str, os.PathLike)):
        prompts = _read_source(source, what)
    elif isinstance(source, Sequence):
        prompts = list(source)
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise VaubanError(f"{what}[{i}] is a {type(p).__name__}, not a string")
            if not p.strip():
                raise VaubanError(f"{what}[{i}] is an empty string; remove it")
    else:
        raise VaubanError(f"{what}: expected a list of strings or a path, got {type(source).__name__}")
    if not prompts:
        raise VaubanError(f"{what}: the prompt list is empty; pass at least one prompt")
    return prompts


def load_pairs(source: str | os.PathLike[str] | Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(prompt, response) pairs for perplexity/KL: a bundled set name, a .jsonl path, or a list."""
    if isinstance(source, (str, os.PathLike)):
        if str(source) in BUNDLED:
            records = bundled_records(str(source))
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise VaubanError(f"reference set {str(source)!r} is not a bundled set nor a file")
            records = read_jsonl(path)
        pairs = [(r.get("prompt"), r.get("response")) if isinstance(r, dict) else (r,) for r in records]
    else:
        pairs = [tuple(p) for p in source]  # type: ignore[misc]
    for i, pair in enumerate(pairs):
        if len(pair) != 2 or not all(isinstance(x, str) and x.strip() for x in pair):
            raise VaubanError(f"reference pair {i} must be two non-empty strings (prompt, response)")
    if not pairs:
        raise VaubanError("the reference set is empty; pass at least one (prompt, response) pair")
    return pairs  # type: ignore[return-value]


def encode_chat(
    tokenizer: Any,
    prompts: Sequence[str],
    formatting: Formatting | None = None,
    prompt_set: str | None = None,
) -> list[list[int]]:
    """Token ids of each chat-formatted prompt (the template already holds any BOS token); see
    :mod:`vauban.text.formatting` for ``formatting`` and ``prompt_set`` (whose system prompt applies).

    A prompt longer than the tokenizer's ``model_max_length`` (which :func:`vauban.load` sets to
    the model's context) is an error here rather than an index error deep in the model.
    """
    has_template = bool(chat_template(tokenizer))
    texts = chat_texts(tokenizer, prompts, formatting, prompt_set)
    ids = [list(x) for x in tokenizer(texts, add_special_tokens=not has_template)["input_ids"]]
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 10**8:  # transformers' "no limit" is a huge sentinel
        longest = max(range(len(ids)), key=lambda i: len(ids[i]), default=None)
        if longest is not None and len(ids[longest]) > limit:
            raise VaubanError(
                f"prompt {longest} ({prompts[longest][:40]!r}...) is {len(ids[longest])} tokens, longer "
                f"than the model's context of {limit}; shorten it"
            )
    return ids


def check_tokenizer(model: Any, tokenizer: Any) -> None:
    """A tokenizer whose ids do not fit the model's embedding table belongs to another model."""
    rows = model.get_input_embeddings().weight.shape[0]
    size = len(tokenizer)
    if size > rows:
        raise VaubanError(
            f"the tokenizer has {size} tokens but the model's embedding has {rows} rows: they "
            "belong to different models; use the tokenizer loaded with this model"
        )


def pad_id(tokenizer: Any) -> int:
    """Any valid id works for padding (it is masked); prefer the tokenizer's own."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
