"""Frozen-dataclass configs: dotted overrides, type coercion, YAML/JSON round trips.

Configs follow Model Garden's shape: nested frozen dataclasses with working defaults,
overridden by dotted paths (``--set train.optimizer.name=adamw``). Overrides given as
strings (command line) are parsed as YAML scalars and then coerced to the field's
declared type; overrides given as Python values (``zoo.build(..., width=32)``, a YAML
file) are type-checked. Any mistake names the field and what it accepts.

A field whose metadata holds ``{"polymorphic": resolve}`` holds a config whose class
depends on its ``name`` (the recipe's ``model`` section): an override of
``<field>.name`` swaps in ``resolve(name)`` before the other overrides apply.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from zoo.errors import ConfigError, did_you_mean


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        hint = did_you_mean(str(value), [str(c) for c in choices])
        raise ConfigError(
            f"{field}={value!r} is not allowed{hint}; allowed values: "
            + ", ".join(repr(c) for c in choices)
        )


def check_range(field: str, value: float, low: float | None = None, high: float | None = None,
                *, low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (bounds optional)."""
    ok = True
    if low is not None:
        ok = ok and (value >= low if low_inclusive else value > low)
    if high is not None:
        ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        lo = "-inf" if low is None else ("[" if low_inclusive else "(") + str(low)
        hi = "inf" if high is None else str(high) + ("]" if high_inclusive else ")")
        raise ConfigError(f"{field}={value!r} is out of range; expected a value in {lo}, {hi}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        inner = _type_name(args[0]) if args else "any"
        return f"list of {inner}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(path: str, value: Any, tp: Any) -> Any:
    """Coerce ``value`` to type ``tp`` or raise ConfigError naming ``path``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(path, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{path}={value!r} has the wrong type; expected {_type_name(tp)}")
    if origin is typing.Literal:
        check_choice(path, value, typing.get_args(tp))
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} has the wrong type; expected {_type_name(tp)}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        return tuple(coerce(f"{path}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}={value!r} has the wrong type; expected a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{path}={value!r} has the wrong type; expected bool (true/false)")
    if tp in (int, float):
        return _coerce_number(path, value, tp)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}={value!r} has the wrong type; expected str")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, prefix=path + ".")
        raise ConfigError(f"{path}={value!r} has the wrong type; expected a mapping of {tp.__name__} fields")
    return value


def _coerce_number(path: str, value: Any, tp: type) -> Any:
    """int or float from a number or numeric string; bools and lossy floats-to-int are refused."""
    if not isinstance(value, bool):
        if isinstance(value, (int, float)) and (tp is float or float(value).is_integer()):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
    raise ConfigError(f"{path}={value!r} has the wrong type; expected {tp.__name__}")


def parse_cli_value(text: str) -> Any:
    """Parse a ``--set`` value as a YAML scalar or flow collection (``[3, 4, 5]``)."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def parse_set_args(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a.b": 1, "c": "x"}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form key.path=value (for example train.epochs=5)")
        key, _, value = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item!r} has an empty key; use key.path=value")
        out[key] = parse_cli_value(value)
    return out


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def apply_overrides(cfg: Any, overrides: Mapping[str, Any], *, prefix: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with dotted ``overrides`` applied and validated."""
    if not overrides:
        return cfg
    cls = type(cfg)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _field_types(cls)
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if head not in fields:
            raise ConfigError(
                f"unknown config field '{prefix}{head}'{did_you_mean(head, fields)}; "
                f"fields of {prefix or cls.__name__ + ' '}are: {', '.join(fields)}"
            )
        if dot:
            grouped.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    changes: dict[str, Any] = {}
    for name, value in direct.items():
        field = fields[name]
        resolve = field.metadata.get("polymorphic")
        if resolve is not None and isinstance(value, str):
            changes[name] = resolve(value)
        elif dataclasses.is_dataclass(hints[name]) or dataclasses.is_dataclass(getattr(cfg, name)):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}{name} is a section; set its fields, e.g. {prefix}{name}.<field>=value")
            grouped.setdefault(name, {}).update(flatten(value))
        else:
            changes[name] = coerce(prefix + name, value, hints[name])
    for name, sub in grouped.items():
        current = changes.get(name, getattr(cfg, name))
        if hints[name] is dict or typing.get_origin(hints[name]) is dict:  # a free mapping: merge the keys
            changes[name] = {**(current or {}), **sub}
            continue
        resolve = fields[name].metadata.get("polymorphic")
        if resolve is not None and "name" in sub:
            current = resolve(sub.pop("name"))
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{prefix}{name} is not a section; set it directly: {prefix}{name}=value")
        changes[name] = apply_overrides(current, sub, prefix=f"{prefix}{name}.")
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as exc:
        # Validation messages start with the bare field name; give it its full dotted path.
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(prefix) else prefix + msg) from exc


def from_dict(cls: type, data: Mapping[str, Any], *, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly nested) mapping, validating every field."""
    return apply_overrides(cls(), flatten(data) if data else {}, prefix=prefix)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), ready for YAML or JSON."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(cfg)


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict, with a clear error if it is unreadable."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path!r} is not valid YAML/JSON: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path!r} must hold a mapping at the top level, got {type(data).__name__}")
    return dict(data)


def write_config(cfg: Any, path: str) -> None:
    """Write the resolved config as YAML (atomically)."""
    from zoo.atomic import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named architecture (KerasHub's word): its full config and a one-line description."""

    config: Any
    description: str
