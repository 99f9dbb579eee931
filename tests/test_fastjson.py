"""fastjson gives exactly what the json module gives, for everything the handler reads and writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ccm_hooks import fastjson
from tests.hookrun import FIXTURES

PAYLOADS = sorted((FIXTURES / "payloads").glob("*.json"))


def test_the_c_accelerator_is_in_use() -> None:
    assert fastjson._CODEC is not None  # CPython: the fast path, not the fallback


@pytest.mark.parametrize("path", PAYLOADS, ids=lambda p: p.stem)
def test_payloads_parse_and_encode_identically(path: Path) -> None:
    text = path.read_text()
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode()) == json.loads(text)
    obj = json.loads(text)
    assert fastjson.dumps(obj) == json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [
        {"s": "café ünï ✓ \U0001f600", "ctl": '\x00\x1f\n\t"\\/', "sur": "\ud800x\udfff"},
        {"n": [0, -1, 2**70, 1.5, -0.0, 1e300, 1e-300], "b": [True, False, None], "e": {}, "l": []},
        [[[[[{"deep": [1]}]]]]],
        "just a string",
        12,
        None,
    ],
)
def test_values_round_trip_like_json(value: object) -> None:
    encoded = fastjson.dumps(value)
    assert encoded == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert fastjson.loads(encoded) == json.loads(encoded)


def test_non_finite_floats_parse_like_json() -> None:
    got = fastjson.loads("[NaN, Infinity, -Infinity]")
    assert math.isnan(got[0]) and got[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "{",
        '{"a":1} x',
        '{"a":1}{"b":2}',
        "[1,]",
        '{"a":"raw\x01control"}',
        "nul",
        "{'a': 1}",
        "\x00",
    ],
)
def test_what_json_refuses_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        json.loads(bad)
    with pytest.raises(ValueError):
        fastjson.loads(bad)


def test_surrounding_whitespace_is_allowed() -> None:
    assert fastjson.loads(' \n\t{"a": [1, 2]}\r\n ') == {"a": [1, 2]}


def test_unserializable_objects_raise_type_error() -> None:
    with pytest.raises(TypeError):
        fastjson.dumps({"a": object()})
