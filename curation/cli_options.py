"""CLI options derived from the core's config classes (``curation.config``).

``@config_options(Spec, "spec", only=("dim", "dtype"))`` adds one ``--dim`` / ``--dtype`` option
per field (help from the field's description, default from its default, choices from its
``Literal``) to a typer command and calls the command with ``spec=Spec(dim=..., dtype=...)``.
A value the config refuses exits with status 2 and the config's one-line error.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from curation.cli_common import user_errors
from curation.config import config_fields


def config_options(cls: type, param: str, *, only: Iterable[str] | None = None,
                   exclude: Iterable[str] = (), defaults: dict[str, Any] | None = None,
                   helps: dict[str, str] | None = None) -> Callable[[Callable], Callable]:
    """Decorate a typer command: options for ``cls``'s fields, the built config as ``param``.

    ``defaults`` and ``helps`` override a field's default or help text for this command only.
    """
    fields = config_fields(cls, only, exclude)
    defaults, helps = defaults or {}, helps or {}

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        if param not in signature.parameters:
            raise TypeError(f"{command.__name__} has no parameter {param!r}")
        options = [_option(name, info, defaults, helps) for name, info in fields.items()]

        @functools.wraps(command)
        def run(**kwargs):
            values = {name: kwargs.pop(name) for name in fields}
            with user_errors():
                built = cls(**values)
            return command(**kwargs, **{param: built})

        kept = [p for p in signature.parameters.values() if p.name != param]
        run.__signature__ = signature.replace(parameters=kept + options)
        return run

    return decorate


def _option(name: str, info, defaults: dict, helps: dict) -> inspect.Parameter:
    help_text = helps.get(name, info.description or "")
    option = typer.Option(help=help_text)
    annotation = info.annotation
    default = defaults.get(name, info.get_default(call_default_factory=True))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, option])
