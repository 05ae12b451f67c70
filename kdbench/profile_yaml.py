"""A user's grid YAML file read and checked field by field before a `Profile` is built from it
(`kdbench.profiles.load_profile`): the file must hold a mapping, every name must be a field of the dataclass it
describes (a profile, a pair, the robustness sweep), every field without a default must be there, and every
value must fit its field's type hint, so a mistake is reported in the file's own words before anything trains.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import yaml

from kdbench.errors import KdbenchError


def read_grid_file(path: Path) -> dict[str, Any]:
    """The mapping of profile fields a grid YAML file holds."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KdbenchError(f"cannot read grid file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KdbenchError(f"grid file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise KdbenchError(f"grid file {path} must hold a mapping of profile fields")
    return raw


def check_fields(where: str, given: Iterable[str], cls: type, optional: Iterable[str] = ()) -> None:
    """Every name in `given` is a field of the dataclass `cls`, and every field without a default (but those in
    `optional`) is given."""
    fields = dataclasses.fields(cls)
    valid = {f.name for f in fields}
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    } - set(optional)
    given = set(given)
    for name in sorted(given - valid):
        raise KdbenchError(f"{where}: unknown field {name!r}; valid fields: {', '.join(sorted(valid))}")
    for name in sorted(required - given):
        raise KdbenchError(f"{where}: missing required field {name!r}")


def check_types(where: str, raw: dict[str, Any], cls: type) -> None:
    """Every value in `raw` fits the type hint of the field of the dataclass `cls` it names."""
    hints = typing.get_type_hints(cls)
    for name, value in raw.items():
        if not _conforms(value, hints[name]):
            raise KdbenchError(f"{where}: field {name!r} must be {_describe(hints[name])}, got {value!r}")


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's type hint (a list stands for a tuple, a mapping for a dataclass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    if dataclasses.is_dataclass(hint):
        fields = typing.get_type_hints(hint)
        return isinstance(value, dict) and all(
            _conforms(v, fields[k]) for k, v in value.items() if k in fields
        )
    if hint is Any:
        return True
    kinds = (int, float) if hint is float else hint
    return isinstance(value, kinds) and (
        hint is bool or not isinstance(value, bool)
    )  # YAML's true is no number


def _describe(hint: Any) -> str:
    """A type hint in a YAML file's words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).replace('a mapping', 'mappings', 1)}"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    if dataclasses.is_dataclass(hint):
        return f"a mapping with fields {', '.join(f.name for f in dataclasses.fields(hint))}"
    return "anything" if hint is Any else hint.__name__
