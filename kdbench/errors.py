"""The one exception type a user can cause; the CLI prints it on one line and exits 2. Its warning twin marks
what kdbench recovered from on its own."""

from __future__ import annotations

from collections.abc import Iterable


class KdbenchError(ValueError):
    """Bad input from the user: an unknown name, a bad value, missing data."""


class KdbenchWarning(UserWarning):
    """Something kdbench recovered from that a user should know (a corrupt cache entry it rebuilds); the CLI
    prints it on one line."""


def unknown(kind: str, name: object, choices: Iterable[str]) -> KdbenchError:
    """An error for a name that is not among the valid choices, listing them."""
    listed = ", ".join(sorted(str(c) for c in choices))
    return KdbenchError(f"unknown {kind} {name!r}; valid choices: {listed}")


def check_choice(kind: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise the one-line error naming them."""
    choices = list(choices)
    if value not in choices:
        raise unknown(kind, value, choices)
    return value
