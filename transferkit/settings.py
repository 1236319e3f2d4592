"""Declared settings: the field machinery every configuration dataclass shares.

A setting is a dataclass field made with :func:`setting`: a type (the annotation), a default
and a one-line help text, plus what the command line needs (flag name, short alias, choices,
metavar), all declared once in the field's metadata.  Values are coerced by the real
annotation (``typing.get_type_hints``), so ``"3"`` becomes ``3`` for an ``int`` field and
``"none"`` becomes ``None`` for an optional one; anything else is refused with a
:class:`~transferkit.errors.ConfigError` naming the setting.

This module sits on the bottom floor (it imports only :mod:`transferkit.errors`): the engine's
``TrainConfig``, the ``HeadConfig`` of the heads and the strategies' options all build on it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import types
import typing
from typing import Any, ClassVar

from .errors import ConfigError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NONE = ("none", "null", "")


def setting(default: Any = dataclasses.MISSING, help: str = "", *,  # noqa: A002 - argparse's word
            factory: Any = dataclasses.MISSING, flag: str | None = None,
            short: str | None = None, choices: tuple[str, ...] | None = None,
            metavar: str | None = None, flat: str | None = None,
            in_memory: bool = False) -> Any:
    """A dataclass field with its help text and command-line spelling.

    ``flag``: the long option (default ``--field-name``); ``short``: a one-letter alias;
    ``choices``: the allowed values; ``flat``: the name under which the field is given in a
    flat mapping (keyword arguments, a flat config file; default: the field name);
    ``in_memory``: the Python API may pass an in-memory object (e.g. ``Samples``) instead
    of the declared type.
    """
    meta = {"help": help, "flag": flag, "short": short, "choices": choices,
            "metavar": metavar, "flat": flat, "in_memory": in_memory}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@functools.lru_cache(maxsize=None)
def type_hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of a dataclass (``from __future__`` strings resolved)."""
    return typing.get_type_hints(cls)


def split_optional(hint: Any) -> tuple[Any, bool]:
    """``(base type, accepts None)``: ``int | None`` -> ``(int, True)``, ``dict[str, Any]`` ->
    ``(dict, False)``, ``Any`` -> ``(Any, True)``."""
    if hint is Any:
        return Any, True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        base, _ = split_optional(args[0]) if len(args) == 1 else (Any, True)
        return base, optional
    return (origin or hint), False


def type_name(hint: Any) -> str:
    base, optional = split_optional(hint)
    name = getattr(base, "__name__", str(base))
    return f"{name} or none" if optional and base is not Any else name


def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` declares; ``where`` names the setting in the error."""
    base, optional = split_optional(hint)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE
                         and base is not str):
        if optional:
            return None
        raise ConfigError(f"{where}: needs a {type_name(hint)}, got none")
    try:
        return _as(base, value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}={value!r} is not a valid {type_name(hint)}") from None


def _as(base: Any, value: Any) -> Any:
    if base is Any:
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(value)
    if base is int:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise TypeError(value)
    if base is float:
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise TypeError(value)
    if base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise TypeError(value)
    if base is dict:
        if isinstance(value, dict):
            return dict(value)
        raise TypeError(value)
    if isinstance(value, base):
        return value
    raise TypeError(value)


def meta(f: dataclasses.Field) -> dict[str, Any]:
    """The command-line metadata of a field (empty values for a plain field)."""
    return {"help": "", "flag": None, "short": None, "choices": None, "metavar": None,
            "flat": None, "in_memory": False, **dict(f.metadata)}


class Settings:
    """Base of a section of settings (a dataclass whose fields are made with :func:`setting`).

    ``to_dict`` / ``from_dict`` round-trip through plain JSON types; ``from_dict`` refuses an
    unknown key, naming it and the valid ones, coerces every value by its annotation and
    runs :meth:`validate`.
    """

    #: the section's name in messages and in nested mappings
    section: ClassVar[str] = "settings"

    def validate(self):
        """Refuse impossible values (raise ConfigError); return ``self``."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str | None = None):
        return cls().updated(d, where=where)

    def updated(self, d: dict[str, Any], *, where: str | None = None):
        """A copy with the settings in ``d`` changed (``None`` keeps a required setting's
        current value; dict settings are merged key by key)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where or self.section}: expected a table of settings, "
                              f"got {d!r}")
        known = {f.name: f for f in dataclasses.fields(self)}
        hints = type_hints(type(self))
        changes: dict[str, Any] = {}
        for key, value in d.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(f"{where or self.section}: unknown setting {key!r} in "
                                  f"section {self.section!r}; valid: {', '.join(known)}")
            changes[name] = self._coerced(known[name], hints[name], value, where)
        return dataclasses.replace(self, **changes).validate()

    def _coerced(self, f: dataclasses.Field, hint: Any, value: Any, where: str | None) -> Any:
        base, optional = split_optional(hint)
        label = f"{where}: {self.section}.{f.name}" if where else f"{self.section}.{f.name}"
        if value is None and not optional:
            return getattr(self, f.name)
        if meta(f)["in_memory"] and value is not None and not isinstance(value, (str, os.PathLike)):
            return value
        value = coerce(value, hint, label)
        if base is dict and value is not None:
            value = {**(getattr(self, f.name) or {}), **value}
        choices = meta(f)["choices"]
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{label}: {value!r} is not one of "
                              f"{', '.join(choices)}")
        return value


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """``(field, annotation)`` pairs of a settings dataclass, in declaration order."""
    hints = type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]
