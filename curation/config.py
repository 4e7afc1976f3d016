"""Configs declared once.

Every config of the library is a frozen pydantic dataclass made with :func:`config`: each field's
type, default, constraint (``Field(gt=0)``), choices (``Literal``, built from a registry with
:func:`choice`) and description are written once, in the core. The Dagster configs
(``assets/_config.py``) and the CLI options (``curation/cli/options.py``) are derived from these
fields, so a default or a check cannot drift between the three.

A bad value raises :class:`CurationError` with one line naming the config and the field:

>>> from pydantic import Field
>>> @config("example")
... class Example:
...     dim: int = Field(default=8, gt=0, description="Width.")
>>> Example(dim=0)
Traceback (most recent call last):
...
curation.errors.CurationError: example 'dim': Input should be greater than 0 (got 0)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo

from curation.errors import CurationError

T = TypeVar("T")

# extra="forbid": a misspelt option is an error, not a silently ignored keyword.
_PYDANTIC = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def config(label: str) -> Callable[[type[T]], type[T]]:
    """Make ``cls`` a frozen, validated dataclass whose errors name ``label`` and the field."""

    def make(cls: type[T]) -> type[T]:
        made = pydantic_dataclass(frozen=True, config=_PYDANTIC)(cls)
        validate = made.__init__

        @functools.wraps(validate)
        def __init__(self, *args, **kwargs) -> None:  # noqa: N807 - replaces the dataclass init
            # Positional values by name, so an error names the field, not its position.
            names = list(made.__pydantic_fields__)
            if len(args) > len(names):
                raise CurationError(f"{label}: takes at most {len(names)} values, got {len(args)}")
            kwargs = {**dict(zip(names, args, strict=False)), **kwargs}
            try:
                validate(self, **kwargs)
            except ValidationError as exc:
                raise CurationError(describe_errors(label, exc)) from None

        made.__init__ = __init__
        made.__config_label__ = label
        return made

    return make


def describe_errors(label: str, exc: ValidationError) -> str:
    """One line for a pydantic ``ValidationError``: ``label 'field': problem (got value)``."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not field:  # a check across fields (a model validator) names its fields itself
            parts.append(f"{label}: {message}")
            continue
        shown = "" if error["type"] in ("missing", "value_error") else f" (got {error['input']!r})"
        parts.append(f"{label} {field!r}: {message}{shown}")
    return "; ".join(parts)


def choice(names: Iterable[str]) -> Any:
    """A ``Literal`` type of ``names`` (a registry's keys), for a field that picks one of them."""
    names = tuple(names)
    if not names:
        raise ValueError("a choice needs at least one name")
    return Literal[names]


def config_fields(cls: type, only: Iterable[str] | None = None,
                  exclude: Iterable[str] = ()) -> dict[str, FieldInfo]:
    """The declared fields of a :func:`config` class (in declaration order), by name."""
    fields: dict[str, FieldInfo] = cls.__pydantic_fields__
    names = list(fields) if only is None else list(only)
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {unknown}")
    return {n: fields[n] for n in names if n not in set(exclude)}


def default_of(cls: type, name: str) -> Any:
    """The declared default of field ``name`` of a :func:`config` class (one place for it)."""
    return config_fields(cls, (name,))[name].get_default(call_default_factory=True)


def from_values(cls: type[T], values: dict[str, Any], **overrides: Any) -> T:
    """``cls`` built from the entries of ``values`` it declares (others are ignored), then overrides."""
    declared = cls.__pydantic_fields__
    return cls(**{**{k: v for k, v in values.items() if k in declared}, **overrides})
