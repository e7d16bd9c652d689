"""Value checks for config keys, written once: each raises ConfigError naming the key, the value and what
is allowed. YAML gives ``true`` as a bool, which Python counts as an int: no check here accepts one as a number.
"""

from __future__ import annotations

from pbexp.errors import ConfigError


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(key: str, value, low: int | None = 1, high: int | None = None, allowed: str = "") -> None:
    """An integer in [low, high] (either end open when None); ``allowed`` replaces the default wording."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(key, value, allowed or _words("an integer", low, high, False, False))


def check_number(
    key: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allowed: str = "",
) -> None:
    """A number (int or float) in the interval given by low/high, each end closed unless ``*_open``."""
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(key, value, allowed or _words("a number", low, high, low_open, high_open))


def _words(what: str, low, high, low_open: bool, high_open: bool) -> str:
    """'an integer >= 1', 'a number in [0, 1)': what a range check allows, in words."""
    if low is None and high is None:
        return what
    if high is None:
        return f"{what} {'>' if low_open else '>='} {low}"
    if low is None:
        return f"{what} {'<' if high_open else '<='} {high}"
    return f"{what} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_choice(key: str, value, choices, allowed: str = "") -> None:
    """One of ``choices``; a bool never matches a non-bool choice (``true`` is not 1)."""
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise ConfigError(key, value, allowed or f"one of {list(choices)}")


def check_bool(key: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
