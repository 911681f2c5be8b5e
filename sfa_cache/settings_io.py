"""Strict dataclass <-> dict conversion shared by every config in the project.

Unknown keys are an error (a typo in a config file must not be silently ignored), nested
dataclasses round-trip through JSON, and tuples come back as tuples.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

from sfa_cache.errors import SfaError

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass.

    A dataclass may name, in a class attribute `OMIT_NONE`, fields that are left out when None
    (parts of a record that only some kinds of it have); every other field is always written.
    """
    out: dict[str, Any] = {}
    omit = getattr(cfg, "OMIT_NONE", ())
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None and f.name in omit:
            continue
        out[f.name] = _to_json(value)
    return out


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], *, where: str = "") -> T:
    """Build `cls` from `data`, rejecting keys `cls` does not define.

    Nested dataclass fields are built recursively; list values become tuples where the field is
    typed as a tuple. `where` names the config in error messages (e.g. 'config.json: model').
    """
    if not isinstance(data, dict):
        raise SfaError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SfaError(
            f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; "
            f"known keys are {', '.join(fields)}"
        )
    missing = [name for name, f in fields.items() if name not in data and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        raise SfaError(f"{where or cls.__name__}: missing required setting(s) {', '.join(missing)} ({flags})")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where=f"{where or cls.__name__}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required key is missing
        raise SfaError(f"{where or cls.__name__}: {e}") from None


def _coerce(hint: Any, value: Any, *, where: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return config_from_dict(hint, value, where=where)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin is list and isinstance(value, list) and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        return [_coerce(typing.get_args(hint)[0], v, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is typing.Union:  # Optional[X]
        for arg in typing.get_args(hint):
            if arg is not type(None) and value is not None:
                return _coerce(arg, value, where=where)
        return value
    return _scalar(hint, value, where=where)


def _scalar(hint: Any, value: Any, *, where: str) -> Any:
    """Check (and where lossless, convert) a scalar against its field type.

    Config files are written by hand: an int where a float goes is fine, and a number written as
    a string (YAML reads `1e-3` as one) is converted; anything else is a one-line error.
    """
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, str):
        try:
            return hint(value)
        except ValueError:
            pass
    is_bool_for_number = isinstance(value, bool) and hint is not bool  # True is an int to Python, not to us
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or is_bool_for_number):
        raise SfaError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def read_settings_file(path: str | os.PathLike) -> dict[str, Any]:
    """A settings file -> its top-level mapping: JSON, or YAML for .yaml / .yml (PyYAML, which
    timm's dependencies install). Anything unreadable is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SfaError(f"settings file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SfaError(f"{path} is not a text file (settings are JSON or YAML)") from None
    except OSError as e:
        raise SfaError(f"cannot read settings file {path}: {e.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SfaError(f"{path}: YAML needs PyYAML (pip install pyyaml); or write it as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SfaError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SfaError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise SfaError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data
