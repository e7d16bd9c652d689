"""pbexp.checks, the value checks every config key goes through, against hand-computed cases: the edges each
accepts, bool never taken for a number (YAML's ``true`` is a Python int), and a ConfigError whose message
names the key, the value and what is allowed."""

from __future__ import annotations

import math

import pytest

from pbexp.checks import check_bool, check_choice, check_int, check_number, is_int, is_number
from pbexp.errors import ConfigError, PbexpError


def refused(check, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------- is_int, is_number


@pytest.mark.parametrize(
    "value, expected",
    [(0, True), (-3, True), (10**30, True), (True, False), (False, False), (1.0, False), ("1", False), (None, False)],
)
def test_is_int(value, expected):
    assert is_int(value) is expected


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, True),
        (-3, True),
        (1.5, True),
        (-0.0, True),
        (math.inf, True),
        (True, False),
        (False, False),
        ("1.5", False),
        (None, False),
        ([1], False),
    ],
)
def test_is_number(value, expected):
    assert is_number(value) is expected


# ---------------------------------------------------------------- check_int


@pytest.mark.parametrize(
    "value, low, high",
    [
        (1, 1, None),
        (10**9, 1, None),
        (0, 0, None),
        (5, 1, 5),
        (1, 1, 5),
        (-7, None, None),
        (-7, None, 3),
        (3, None, 3),
        (2, 2, 2),
    ],
)
def test_check_int_accepts_the_edges(value, low, high):
    check_int("k", value, low, high)


def test_check_int_default_is_a_positive_integer():
    check_int("trainer.epochs", 1)
    e = refused(check_int, "trainer.epochs", 0)
    assert str(e) == "trainer.epochs=0 is not allowed: an integer >= 1"
    assert (e.key, e.value, e.allowed) == ("trainer.epochs", 0, "an integer >= 1")
    assert isinstance(e, PbexpError)  # the CLI prints it on one line


@pytest.mark.parametrize(
    "value, low, high, message",
    [
        (0, 1, None, "k=0 is not allowed: an integer >= 1"),
        (True, 1, None, "k=True is not allowed: an integer >= 1"),  # true is not 1
        (False, 0, None, "k=False is not allowed: an integer >= 0"),
        (2.0, 1, None, "k=2.0 is not allowed: an integer >= 1"),
        ("3", 1, None, "k='3' is not allowed: an integer >= 1"),
        (None, 1, None, "k=None is not allowed: an integer >= 1"),
        (6, 1, 5, "k=6 is not allowed: an integer in [1, 5]"),
        (0, 1, 5, "k=0 is not allowed: an integer in [1, 5]"),
        (4, None, 3, "k=4 is not allowed: an integer <= 3"),
        (1.5, None, None, "k=1.5 is not allowed: an integer"),
        (True, None, None, "k=True is not allowed: an integer"),
    ],
)
def test_check_int_refuses_with_key_value_and_allowed(value, low, high, message):
    assert str(refused(check_int, "k", value, low, high)) == message


def test_check_int_allowed_replaces_the_wording():
    e = refused(check_int, "trainer.batch_size", 0, allowed="a positive integer (the global batch)")
    assert str(e) == "trainer.batch_size=0 is not allowed: a positive integer (the global batch)"


# ---------------------------------------------------------------- check_number


@pytest.mark.parametrize(
    "value, kwargs",
    [
        (-1e9, {}),
        (0, {}),
        (math.inf, {}),
        (0, {"low": 0}),
        (0.0, {"low": 0, "high": 1}),
        (1, {"low": 0, "high": 1}),  # closed ends take the end
        (1e-12, {"low": 0, "low_open": True}),
        (0.999, {"high": 1, "high_open": True}),
        (0.5, {"low": 0, "high": 1, "low_open": True, "high_open": True}),
        (3, {"low": 2.5}),  # an int is a number
    ],
)
def test_check_number_accepts_the_edges(value, kwargs):
    check_number("k", value, **kwargs)


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (True, {}, "k=True is not allowed: a number"),
        (False, {"low": 0}, "k=False is not allowed: a number >= 0"),
        ("0.5", {}, "k='0.5' is not allowed: a number"),
        (None, {}, "k=None is not allowed: a number"),
        (-0.1, {"low": 0}, "k=-0.1 is not allowed: a number >= 0"),
        (0, {"low": 0, "low_open": True}, "k=0 is not allowed: a number > 0"),
        (2, {"high": 1}, "k=2 is not allowed: a number <= 1"),
        (1, {"high": 1, "high_open": True}, "k=1 is not allowed: a number < 1"),
        (1.0, {"low": 0, "high": 1, "high_open": True}, "k=1.0 is not allowed: a number in [0, 1)"),
        (0, {"low": 0, "high": 1, "low_open": True}, "k=0 is not allowed: a number in (0, 1]"),
        (1.5, {"low": 0, "high": 1}, "k=1.5 is not allowed: a number in [0, 1]"),
        (math.nan, {"low": 0, "high": 1}, "k=nan is not allowed: a number in [0, 1]"),  # NaN is in no interval
    ],
)
def test_check_number_refuses_with_key_value_and_allowed(value, kwargs, message):
    assert str(refused(check_number, "k", value, **kwargs)) == message


def test_check_number_allowed_replaces_the_wording():
    e = refused(check_number, "model.dropout", 1.0, 0, 1, high_open=True, allowed="a probability below 1")
    assert (e.key, e.value, e.allowed) == ("model.dropout", 1.0, "a probability below 1")
    assert str(e) == "model.dropout=1.0 is not allowed: a probability below 1"


# ---------------------------------------------------------------- check_choice, check_bool


@pytest.mark.parametrize(
    "value, choices", [("a", ["a", "b"]), ("b", ("a", "b")), (1, [1, 2]), (True, [True, "x"]), (None, [None, "auto"])]
)
def test_check_choice_accepts_a_member(value, choices):
    check_choice("k", value, choices)


@pytest.mark.parametrize(
    "value, choices, message",
    [
        ("c", ["a", "b"], "k='c' is not allowed: one of ['a', 'b']"),
        ("A", ("a", "b"), "k='A' is not allowed: one of ['a', 'b']"),  # case matters; a tuple is listed as a list
        (True, [1, 2], "k=True is not allowed: one of [1, 2]"),  # true is not 1
        (1, [True, False], "k=1 is not allowed: one of [True, False]"),
        (0, [False, "x"], "k=0 is not allowed: one of [False, 'x']"),
    ],
)
def test_check_choice_refuses_with_the_choices(value, choices, message):
    assert str(refused(check_choice, "k", value, choices)) == message


def test_check_choice_allowed_replaces_the_wording():
    e = refused(check_choice, "trainer.amp", "fp16", ["none", "bf16"], allowed="none or bf16")
    assert str(e) == "trainer.amp='fp16' is not allowed: none or bf16"


@pytest.mark.parametrize("value", [True, False])
def test_check_bool_accepts_true_and_false(value):
    check_bool("k", value)


@pytest.mark.parametrize(
    "value, message",
    [
        (1, "k=1 is not allowed: true or false"),
        (0, "k=0 is not allowed: true or false"),
        ("true", "k='true' is not allowed: true or false"),
        (None, "k=None is not allowed: true or false"),
    ],
)
def test_check_bool_refuses_anything_else(value, message):
    assert str(refused(check_bool, "k", value)) == message
