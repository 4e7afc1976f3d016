"""Dagster configs derived from the core's config classes (``curation.config``).

An asset's ``dg.Config`` takes its fields (type, default, constraint, description) from the core
config it feeds, so they are declared once; ``to_core`` builds that core config back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, TypeVar

import dagster as dg
import pydantic

from curation.config import config_fields, from_values

T = TypeVar("T")


def derived_config(name: str, *sources: type | tuple[type, Iterable[str]],
                   exclude: Iterable[str] = (), **extra: Any) -> type[dg.Config]:
    """A ``dg.Config`` class with the fields of ``sources`` (a class, or a class and field names).

    ``extra`` adds or replaces fields, as ``name=(annotation, pydantic.Field(...))``. Subclass the
    result to add methods; the subclass's name is what the Dagster UI shows.
    """
    fields: dict[str, tuple] = {}
    for source in sources:
        cls, only = source if isinstance(source, tuple) else (source, None)
        for field, info in config_fields(cls, only, exclude).items():
            fields[field] = (info.annotation, copy.copy(info))
    fields.update(extra)
    return pydantic.create_model(name, __base__=CoreConfig, **fields)


class CoreConfig(dg.Config):
    """Base of derived configs: ``to_core(cls)`` builds the core config from the same fields."""

    def to_core(self, cls: type[T], **overrides: Any) -> T:
        return from_values(cls, self.model_dump(), **overrides)
