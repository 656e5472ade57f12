"""One settings object for the CLI: command line > environment (``VAUBAN_*``) > TOML file > defaults.

The file is ``vauban.toml`` in the working directory (or ``--config PATH``), with the settings
at top level or under a ``[vauban]`` table, named as the fields below::

    model = "Qwen/Qwen2.5-1.5B-Instruct"
    alpha = 1.2
    max_tokens = 96
    system_prompt = "You are a helpful assistant."

    [template_options]          # keyword arguments of the chat template
    enable_thinking = false

    [system_prompts]            # a prompt set's own system prompt (harmful, harmless, eval...)
    eval = "Answer briefly."

In the environment, ``VAUBAN_TEMPLATE_OPTIONS`` and ``VAUBAN_SYSTEM_PROMPTS`` take a JSON object
or ``KEY=VALUE,KEY=VALUE``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.errors import VaubanError
from .text.formatting import Formatting, parse_option, parse_set_prompt

DEFAULT_FILE = "vauban.toml"


@dataclass(frozen=True)
class Settings:
    """Everything a CLI run can be told; ``None`` means "vauban's default" for that step."""

    model: str | None = None
    output_dir: str = "abliterated"
    alpha: float = 1.0
    layer: int | None = None
    select: str = "effect"
    embeddings: bool = False
    harmful: str = "harmful"
    harmless: str = "harmless"
    eval_prompts: str | None = None
    max_tokens: int = 128  # = vauban.evaluation.evaluating.DEFAULT_MAX_TOKENS (the length study's choice)
    batch_size: int | None = None
    device: str | None = None
    dtype: str | None = None
    overwrite: bool = False
    quiet: bool = False
    format: str = "safetensors"  # export format (vauban.exports.formats)
    quant: str | None = None  # export quantization (gguf: q8_0, q4_k_m, ...; mlx: bits)
    judge: str | None = None  # refusal judge spec (vauban.judge); None: the markers
    system_prompt: str | None = None
    system_prompts: dict[str, str] | None = None
    template_options: dict[str, Any] | None = None
    thinking_tokens: int | None = None

    def formatting(self) -> Formatting | None:
        """The prompt formatting these settings ask for (None: nothing asked, family defaults)."""
        fields = (self.system_prompt, self.system_prompts, self.template_options, self.thinking_tokens)
        if all(f is None for f in fields):
            return None
        return Formatting(
            system_prompt=self.system_prompt,
            system_prompts=self.system_prompts or {},
            template_options=self.template_options or {},
            thinking_tokens=self.thinking_tokens,
        )


def _field_type(name: str) -> type:
    hint = typing.get_type_hints(Settings)[name]
    if isinstance(hint, types.UnionType):  # "X | None"
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _mapping(name: str, value: Any, where: str) -> dict[str, Any]:
    """A table setting from TOML (a table), the environment (a JSON object or ``K=V,K=V``) or
    the command line (repeated ``K=V`` flags)."""
    parse = parse_set_prompt if name == "system_prompts" else parse_option
    if isinstance(value, Mapping):
        items = dict(value)
    elif isinstance(value, str) and value.strip().startswith("{"):
        import json

        try:
            items = json.loads(value)
        except json.JSONDecodeError as err:
            raise VaubanError(f"{where}: {name} is not a JSON object ({err.msg})") from None
    elif isinstance(value, str):
        items = dict(parse(part) for part in value.split(",") if part.strip())
    elif isinstance(value, (list, tuple)):
        items = dict(parse(part) for part in value)
    else:
        raise VaubanError(f"{where}: {name} must be a table of KEY=VALUE, got {value!r}")
    try:
        given: dict[str, Any] = {name: items}
        Formatting(**given)  # checks names and values
    except VaubanError as err:
        raise VaubanError(f"{where}: {err}") from None
    return items


def _coerce(name: str, value: Any, where: str) -> Any:
    if name in ("system_prompts", "template_options"):
        return _mapping(name, value, where)
    kind = _field_type(name)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if kind is bool and text.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text.lower() in ("1", "true", "yes", "on")
        try:
            if kind in (int, float):
                return kind(text)
        except ValueError:
            pass
        if kind is str:
            return text
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise VaubanError(f"{where}: {name} must be {kind.__name__}, got {value!r}")


def read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:  # TOML is UTF-8 text
        raise VaubanError(f"cannot read config file {path}: {err}") from None
    table = data.pop("vauban", {})
    return {**data, **table}  # top-level keys and a [vauban] table both count


def resolve(
    cli: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Merge the layers; unknown keys in the file are an error (typos should not pass silently)."""
    env = os.environ if env is None else env
    names = [f.name for f in dataclasses.fields(Settings)]
    values: dict[str, Any] = {}
    path = Path(config_file) if config_file else Path(DEFAULT_FILE)
    if config_file or path.is_file():
        file_values = read_file(path)
        unknown = sorted(set(file_values) - set(names))
        if unknown:
            raise VaubanError(f"{path}: unknown settings {unknown}; known: {names}")
        values.update({k: _coerce(k, v, str(path)) for k, v in file_values.items()})
    for name in names:
        key = f"VAUBAN_{name.upper()}"
        if env.get(key):
            values[name] = _coerce(name, env[key], key)
    for name, value in cli.items():
        if name in names and value is not None:
            values[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    return check(Settings(**values))


def check(settings: Settings) -> Settings:
    """Range checks that need no model, so a typo fails before a minute-long model load."""
    from .core.errors import check_alpha
    from .direction.selecting import check_select
    from .runtime.generating import check_max_tokens

    check_alpha(settings.alpha)
    check_max_tokens(settings.max_tokens)
    if settings.batch_size is not None and settings.batch_size < 1:
        raise VaubanError(f"batch_size must be at least 1, got {settings.batch_size}")
    check_select(settings.select)
    if settings.layer is not None and settings.layer < 0:
        raise VaubanError(f"layer must be a layer index (0 or more), got {settings.layer}")
    if settings.judge is not None:
        from .judge import check_spec

        check_spec(settings.judge)
    settings.formatting()  # the formatting's own checks (thinking_tokens >= 0...)
    return settings
