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
        if not allowed:
            allowed = (
                "an integer"
                if low is None and high is None
                else f"an integer >= {low}"
                if high is None
                else f"an integer <= {high}"
                if low is None
                else f"an integer in [{low}, {high}]"
            )
        raise ConfigError(key, value, allowed)


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
        if not allowed:
            ends = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
            allowed = (
                "a number"
                if low is None and high is None
                else f"a number {'>' if low_open else '>='} {low}"
                if high is None
                else f"a number {'<' if high_open else '<='} {high}"
                if low is None
                else f"a number in {ends}"
            )
        raise ConfigError(key, value, allowed)


def check_choice(key: str, value, choices, allowed: str = "") -> None:
    """One of ``choices``; a bool never matches a non-bool choice (``true`` is not 1)."""
    if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
        raise ConfigError(key, value, allowed or f"one of {list(choices)}")


def check_bool(key: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
