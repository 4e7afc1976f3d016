"""CLI options derived from the core's config classes (``curation.config``).

``@config_options(Spec, "spec", only=("dim", "dtype"))`` adds one ``--dim`` / ``--dtype`` option
per field (help from the field's description, default from its default, choices from its
``Literal``) to a typer command and calls the command with ``spec=Spec(dim=..., dtype=...)``.
A value the config refuses exits with status 2 and the config's one-line error.

A choice is read as text (its names shown as the metavar, ``[sgd|adam]``, or in the help text
when the list is long) and checked by the config, so a wrong name gets the same one-line error
as any other bad value rather than click's usage box. ``parsers`` reads a field from text for
this command (``params`` as comma-separated names): the option is text and the parser's result
goes to the config.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

import typer

from curation.cli.common import user_errors
from curation.config import config_fields
from curation.errors import CurationError


def config_options(cls: type, param: str, *, only: Iterable[str] | None = None,
                   exclude: Iterable[str] = (), defaults: dict[str, Any] | None = None,
                   helps: dict[str, str] | None = None,
                   parsers: dict[str, Callable[[str], Any]] | None = None,
                   ) -> Callable[[Callable], Callable]:
    """Decorate a typer command: options for ``cls``'s fields, the built config as ``param``.

    ``defaults`` and ``helps`` override a field's default or help text for this command only;
    ``parsers`` read a field from text (the option is then a text option).
    """
    fields = config_fields(cls, only, exclude)
    defaults, helps, parsers = defaults or {}, helps or {}, parsers or {}
    unknown = set(defaults) | set(helps) | set(parsers)
    if unknown - set(fields):
        raise ValueError(f"config_options for {cls.__name__}: not options {sorted(unknown - set(fields))}")

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)  # the command may use string annotations
        if param not in signature.parameters:
            raise TypeError(f"{command.__name__} has no parameter {param!r}")
        options = [_option(name, info, defaults, helps, name in parsers)
                   for name, info in fields.items()]

        @functools.wraps(command)
        def run(**kwargs):
            values = {name: kwargs.pop(name) for name in fields}
            with user_errors():
                built = cls(**{name: parsers[name](value) if name in parsers else value
                               for name, value in values.items()})
            return command(**kwargs, **{param: built})

        kept = [p for p in signature.parameters.values() if p.name != param]
        run.__signature__ = signature.replace(parameters=kept + options)
        return run

    return decorate


def choices_of(annotation: Any) -> tuple | None:
    """The names of a ``Literal`` annotation (also inside ``Optional``), else None."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:
        return typing.get_args(args[0])
    return None


def _option(name: str, info, defaults: dict, helps: dict, parsed: bool) -> inspect.Parameter:
    help_text = helps.get(name, info.description or "")
    annotation = info.annotation
    default = defaults.get(name, info.get_default(call_default_factory=True))
    names = choices_of(annotation)
    if names is not None:
        listed = "[" + "|".join(map(str, names)) + "]"
        if len(listed) > 24:  # a long list reads better in the help text than as the metavar
            help_text, listed = f"{help_text} One of: {', '.join(map(str, names))}.", "<str>"
        option = typer.Option(help=help_text, metavar=listed)
        annotation = str | None if type(None) in typing.get_args(annotation) else str
    elif parsed:
        option = typer.Option(help=help_text)
        annotation = str
        if not isinstance(default, str):
            default = ",".join(default)
    else:
        option = typer.Option(help=help_text)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, option])


PARAM_HELP = "Selector option as key=value (JSON value or plain text); repeatable."


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param key=value`` items as a dict: the value read as JSON, else kept as text.

    The selector's config then checks names and values (one line naming selector and field).
    """
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CurationError(f"--param must be key=value, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params
