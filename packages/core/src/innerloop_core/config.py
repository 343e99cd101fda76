"""Typed run configurations: profiles and `--set key=value` overrides.

Every paper describes its runs with frozen dataclasses (nested where it helps) and a
mapping `profile name -> config`. The three profiles are fixed project-wide:

  tiny  CI smoke: seconds on 2 CPU cores; runs the real pipeline end to end.
  cpu   <= 20 min on 2 CPU cores; shows the paper's headline qualitatively.
  full  the paper's own scale, for one GPU; resumable in slices.

Overrides address fields with dotted paths (`fig2.steps=1000`) and are parsed with the
field's declared type. Anything wrong (unknown profile, unknown key, value of the wrong
type) raises `ConfigError` with a one-line message naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

PROFILES = ("tiny", "cpu", "full")

C = TypeVar("C")


class ConfigError(ValueError):
  """A configuration problem, reported in one line."""


E = TypeVar("E", bound=enum.Enum)


def parse_enum(value: Any, enum_type: type[E], name: str) -> E:
  """An enum member given as itself or as its string value; else a one-line ConfigError
  naming the argument and the allowed values. Used for every implementation switch."""
  if isinstance(value, enum_type):
    return value
  if isinstance(value, str):
    for member in enum_type:
      if member.value == value:
        return member
  allowed = ", ".join(repr(m.value) for m in enum_type)
  raise ConfigError(
    f"{name} must be one of {allowed} (or a {enum_type.__name__} member), got {value!r}"
  )


def select_profile(profiles: Mapping[str, C], name: str) -> C:
  """Returns the config of profile `name`; a clear error when it does not exist."""
  if name not in profiles:
    raise ConfigError(f"unknown profile {name!r}; allowed: {', '.join(profiles)}")
  return profiles[name]


def _field_names(cls: type) -> list[str]:
  return [f.name for f in dataclasses.fields(cls)]


def _parse_bool(text: str, key: str) -> bool:
  lowered = text.strip().lower()
  if lowered in ("1", "true", "yes", "on"):
    return True
  if lowered in ("0", "false", "no", "off"):
    return False
  raise ConfigError(f"{key}: expected a bool (true/false), got {text!r}")


def _parse_value(text: str, tp: Any, key: str) -> Any:
  """Parses `text` as a value of the (resolved) type annotation `tp`."""
  origin = typing.get_origin(tp)
  args = typing.get_args(tp)
  if origin in (typing.Union, types.UnionType):
    non_none = [a for a in args if a is not type(None)]
    if type(None) in args and text.strip().lower() in ("none", "null"):
      return None
    errors = []
    for candidate in non_none:
      try:
        return _parse_value(text, candidate, key)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError(f"{key}: {text!r} matches none of {tp}")
  if origin is typing.Literal:
    for a in args:
      if str(a) == text:
        return a
    raise ConfigError(f"{key}: {text!r} is not allowed; allowed: {', '.join(map(str, args))}")
  if origin in (tuple, list, Sequence):
    items = [t for t in text.strip("()[] ").split(",") if t.strip()]
    item_tp = args[0] if args else str
    parsed = tuple(_parse_value(t.strip(), item_tp, key) for t in items)
    return parsed if origin is not list else list(parsed)
  if isinstance(tp, type) and issubclass(tp, enum.Enum):
    allowed = [m.value for m in tp]
    for m in tp:
      if text == m.value or text == m.name:
        return m
    raise ConfigError(f"{key}: {text!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
  if tp is bool:
    return _parse_bool(text, key)
  if tp is int:
    try:
      return int(text)
    except ValueError:
      raise ConfigError(f"{key}: expected an int, got {text!r}") from None
  if tp is float:
    try:
      return float(text)
    except ValueError:
      raise ConfigError(f"{key}: expected a float, got {text!r}") from None
  if tp is str:
    return text
  raise ConfigError(f"{key}: fields of type {tp} cannot be set from the command line")


def _set_path(cfg: Any, path: list[str], text: str, full_key: str) -> Any:
  cls = type(cfg)
  if not dataclasses.is_dataclass(cfg):
    raise ConfigError(f"{full_key}: {'.'.join(path)} is not a config section")
  name = path[0]
  if name not in _field_names(cls):
    raise ConfigError(
      f"unknown key {full_key!r}; allowed at this level: {', '.join(_field_names(cls))}"
    )
  hints = typing.get_type_hints(cls)
  current = getattr(cfg, name)
  if len(path) == 1:
    if dataclasses.is_dataclass(current):
      sub = ", ".join(f"{name}.{n}" for n in _field_names(type(current)))
      raise ConfigError(f"{full_key} is a section; set one of: {sub}")
    new = _parse_value(text, hints[name], full_key)
  else:
    new = _set_path(current, path[1:], text, full_key)
  return dataclasses.replace(cfg, **{name: new})


def apply_overrides(cfg: C, overrides: Sequence[str]) -> C:
  """Applies `key=value` overrides (dotted keys for nested sections) to `cfg`."""
  for item in overrides:
    if "=" not in item:
      raise ConfigError(f"override {item!r} must look like key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
      raise ConfigError(f"override {item!r} has an empty key")
    cfg = _set_path(cfg, key.split("."), text.strip(), key)
  return cfg


def to_dict(cfg: Any) -> Any:
  """A JSON-ready view of a config (enums as their values)."""
  if dataclasses.is_dataclass(cfg):
    return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
  if isinstance(cfg, enum.Enum):
    return cfg.value
  if isinstance(cfg, (list, tuple)):
    return [to_dict(v) for v in cfg]
  if isinstance(cfg, Mapping):
    return {str(k): to_dict(v) for k, v in cfg.items()}
  return cfg


_OMIT_AT_DEFAULT = "innerloop_omit_from_fingerprint_at_default"


def added_field(default: Any) -> Any:
  """A dataclass field added to a config after runs were written with it.

  At its default (which must reproduce the behaviour before the field existed) it is left
  out of ``fingerprint``, so checkpoints written before the field existed still resume;
  any other value is part of the fingerprint as usual.
  """
  return dataclasses.field(default=default, metadata={_OMIT_AT_DEFAULT: True})


def _fingerprint_view(cfg: Any) -> Any:
  """``to_dict`` without the ``added_field``s that sit at their defaults."""
  if dataclasses.is_dataclass(cfg):
    view = {}
    for f in dataclasses.fields(cfg):
      value = getattr(cfg, f.name)
      if f.metadata.get(_OMIT_AT_DEFAULT) and value == f.default:
        continue
      view[f.name] = _fingerprint_view(value)
    return view
  if isinstance(cfg, (list, tuple)):
    return [_fingerprint_view(v) for v in cfg]
  if isinstance(cfg, Mapping):
    return {str(k): _fingerprint_view(v) for k, v in cfg.items()}
  return to_dict(cfg)


def fingerprint(cfg: Any) -> str:
  """A stable hash of a config: checkpoints written under another config are refused.

  Fields declared with ``added_field`` count only when they differ from their default.
  """
  blob = json.dumps(_fingerprint_view(cfg), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(blob.encode()).hexdigest()[:16]
