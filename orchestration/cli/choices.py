"""Options and arguments that take one of an enum's values (``--format``, ``--stage``, a review's verdict): every
command reports a bad value alike.

Typer's own enum handling words the error through pydantic (``Value error, 'x' is not one
of ...``); this parser gives click's usage error, ``Invalid value for '--format' / '-f': 'x' is
not one of 'a', 'b'.``, exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

import typer

__all__ = ["choice_parser", "format_option"]

Choice = TypeVar("Choice", bound=StrEnum)


def format_option(choices: type[Choice], help: str) -> Any:
    """A ``--format``/``-f`` option whose value is one of ``choices``."""
    return typer.Option("--format", "-f", parser=choice_parser(choices), help=help)


def choice_parser(choices: type[Choice]) -> Callable[[str], Choice]:
    """Parse a value of ``choices``; any other is a usage error (exit 2) that lists them."""

    def parse(value: str) -> Choice:
        try:
            return choices(value)
        except ValueError:
            allowed = ", ".join(repr(choice.value) for choice in choices)
            raise typer.BadParameter(f"{value!r} is not one of {allowed}.") from None

    return parse
