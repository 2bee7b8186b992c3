"""Loading typed, validated configuration from conf/*.yaml; each stage defines its own section
(`hpa_ray.<stage>.config`) on `Section`.

A wrong key or value is a ConfigError naming the file and the dotted key. Each run writes
its resolved config beside its outputs (`write_resolved`).
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
)

from hpa_ray.core import storage
from hpa_ray.core.errors import HpaRayError


class ConfigError(HpaRayError, ValueError):
    """A configuration file or override that does not fit the schema."""


def _as_text(value):
    """YAML reads 1234 as a number: a string field (a path, a hash) takes it as its text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Text = Annotated[str, BeforeValidator(_as_text)]


def _sha256(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"a SHA-256 is 64 hexadecimal digits, got {len(value)} characters (quote it in YAML)")
    return value


Sha256 = Annotated[Text | None, AfterValidator(_sha256)]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Cfg = TypeVar("Cfg", bound=BaseModel)


def _set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    tree[keys[-1]] = value


_MAX_YAML = 1 << 20  # bytes: no configuration file is this large


def safe_yaml(text: str, source: str):
    """YAML → Python values, safely: plain YAML only (no tags that run code), no aliases (an
    alias bomb expands a few hundred bytes into gigabytes), at most 1 MiB. ConfigError naming
    `source` otherwise."""
    if len(text) > _MAX_YAML:
        raise ConfigError(f"{source}: {len(text)} bytes; a configuration is at most {_MAX_YAML}")
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise ConfigError(f"{source}: YAML aliases (*name) are not accepted in configuration")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML (plain values only): {exc}") from None


def parse_overrides(overrides: list[str]) -> dict:
    """["classical.scale=0.5", "crop_size=128"] → nested dict, values parsed as YAML."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. classical.scale=0.5)")
        value = safe_yaml(raw, f"override {key.strip()}")
        if isinstance(value, int) and not isinstance(value, bool) and str(value) != raw.strip():
            value = raw.strip()  # digits YAML would change (leading zeros, octal): a hash, an ID
        _set_dotted(tree, key.strip(), value)
    return tree


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _section_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The config section reached by the keys in `loc` from `model` (through optional sections), or None."""
    for key in loc:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return None
        kinds = typing.get_args(field.annotation) or (field.annotation,)  # X | None: X
        sections = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if not sections:
            return None
        model = sections[0]
    return model


def _did_you_mean(model: type[BaseModel] | None, loc: tuple) -> str:
    """' (did you mean 'noise'?)' for a misspelt key whose section `model` has one close, else ''."""
    section = _section_at(model, loc[:-1]) if model else None
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1) if section else []
    return f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?)" if close else ""


def describe(error: ValidationError, source: str | None, model: type[BaseModel] | None = None) -> str:
    """One line per error: `source: key: what (got value)`; no source: `key: what (got value)`.
    With the validated `model`, an unknown key close to a known one names it."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            line = f"unknown key {key!r}{_did_you_mean(model, item['loc'])}"
        elif isinstance(item.get("input"), dict):  # a whole section: the message names what is wrong
            line = f"{key}: {msg}" if key else msg
        else:
            line = f"{key or '(top level)'}: {msg} (got {item.get('input')!r})"
        lines.append(f"{source}: {line}" if source else line)
    return "\n".join(lines)


def _read_file(path: str, chain: tuple[str, ...] = ()) -> dict:
    """One config file as a dict; a `base: FILE` key (relative to this file) is read first and
    this file's keys override it (an overlay states only what differs)."""
    try:
        data = safe_yaml(storage.read_text(path), path) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist" + (f" (base of {chain[-1]})" if chain else "")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: the path of the file this one overrides, got {base!r}")
    if not (storage.is_uri(base) or Path(base).is_absolute()):
        joined = storage.join(storage.parent(path), base)
        base = joined if storage.is_uri(joined) else os.path.normpath(joined)
    if base in chain or base == path:
        raise ConfigError(f"{path}: base {base} is already in the chain {' -> '.join(chain)}")
    return merge(_read_file(base, (*chain, path)), data)


def load_config(cls: type[Cfg], path: str | Path | list | None = None, overrides: list[str] | None = None) -> Cfg:
    """Defaults of `cls`, updated by the YAML file(s) at `path` in order (each may name a `base`
    it overrides), then by KEY=VALUE overrides."""
    paths = [str(p) for p in ([] if path is None else path if isinstance(path, list | tuple) else [path])]
    data: dict = {}
    for one in paths:
        data = merge(data, _read_file(one))
    source = " + ".join(paths) or "defaults"
    if overrides:
        source = f"{source} + overrides"
        data = merge(data, parse_overrides(overrides))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, source, cls)) from None


def write_resolved(cfg: BaseModel, path: str | Path) -> str | Path:
    """Write the fully resolved config as YAML (loadable again by load_config)."""
    storage.write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path


def with_updates(cfg: Cfg, updates: dict, source: str) -> Cfg:
    """`cfg` with the nested `updates` applied and validated again (ConfigError naming `source`)."""
    try:
        return type(cfg).model_validate(merge(cfg.model_dump(), updates))
    except ValidationError as exc:
        raise ConfigError(describe(exc, source, type(cfg))) from None
