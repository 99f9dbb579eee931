"""jsontext: strict parsing, exact round trips and splice edits, on fixed cases and random documents."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from ccm_hooks.commands import jsonsplice, jsontext
from ccm_hooks.commands.jsontext import Number

NUMBERS = ["0", "-0", "1", "-12", "10", "1.5", "1.50", "0.1", "1e3", "1E2", "1e400", "-1e400", "1e-400",
           "2E+3", "0.1e1", "-0.0", "1234567890" * 6]  # fmt: skip


def random_text(rng: random.Random, depth: int = 0) -> str:
    """A random JSON text with random (legal) whitespace, numbers and escapes as a person might write."""

    def ws() -> str:
        return rng.choice(["", "", " ", "  ", "\n", "\n  ", "\t", "\r\n    "])

    kind = rng.choice(["obj", "arr", "num", "str", "lit"] if depth < 4 else ["num", "str", "lit"])
    if kind == "obj":
        keys = rng.sample(["a", "b", "hooks", "é", "k\\u00e9y", "x\\/y", "sp ace"], rng.randint(0, 4))
        members = [f'{ws()}"{k}"{ws()}:{ws()}{random_text(rng, depth + 1)}{ws()}' for k in keys]
        return "{" + ",".join(members) + ws() + "}"
    if kind == "arr":
        return (
            "[" + ",".join(ws() + random_text(rng, depth + 1) + ws() for _ in range(rng.randint(0, 4))) + "]"
        )
    if kind == "num":
        return rng.choice(NUMBERS)
    if kind == "str":
        return rng.choice(['""', '"plain"', '"\\u00e9\\n\\t"', '"日本"', '"\\ud83d\\ude00"', '"a\\\\b\\"c"'])
    return rng.choice(["true", "false", "null"])


def mutate(rng: random.Random, value: Any) -> Any:
    """A copy of ``value`` with a few random edits (adds, removals, replacements) anywhere inside."""
    if isinstance(value, dict):
        out = {k: mutate(rng, v) if rng.random() < 0.5 else v for k, v in value.items() if rng.random() < 0.9}
        if rng.random() < 0.3:
            out[f"new{rng.randint(0, 9)}"] = {"n": [1, Number("1E2")]}
        return out
    if isinstance(value, list):
        out_list = [mutate(rng, v) if rng.random() < 0.5 else v for v in value if rng.random() < 0.9]
        if rng.random() < 0.3:
            out_list.insert(rng.randint(0, len(out_list)), {"fresh": True})
        return out_list
    return value if rng.random() < 0.8 else "changed"


def plain(value: Any) -> Any:
    """What json.loads would have made of it (Number -> int/float)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return json.loads(value.text) if isinstance(value, Number) else value


@pytest.mark.parametrize("seed", range(300))
def test_random_documents_round_trip_and_edit(seed: int) -> None:
    rng = random.Random(seed)
    text = rng.choice(["", " ", "\n"]) + random_text(rng) + rng.choice(["", "\n", "  \n"])
    tree = jsontext.parse(text)
    value = tree.value
    assert json.loads(text) == plain(value)
    # Unchanged: the very same bytes, whatever the style passed.
    assert jsonsplice.render(value, tree, jsonsplice.Style(indent=rng.choice([None, "  ", "\t"]))) == text
    # Changed: valid JSON holding exactly the new value, every number as it was written.
    new = mutate(rng, value)
    out = jsonsplice.render(new, tree, jsonsplice.Style(indent=rng.choice([None, "  "])))
    assert jsontext.same(jsontext.parse(out).value, new)


@pytest.mark.parametrize("token", NUMBERS)
def test_numbers_keep_their_text(token: str) -> None:
    value = jsontext.parse(token).value
    assert jsonsplice.scalar(value) == token
    if isinstance(value, Number):
        assert value.text == token
    else:
        assert type(value) in (int, float) and json.loads(token) == value


def test_splice_keeps_neighbours_and_style() -> None:
    text = '{\n\t"a" : [1 ,2],\n\t"b": {"c": 1E2}\n}'
    tree = jsontext.parse(text)
    new = {"a": [1, 2, 3], "b": tree.value["b"], "d": {"e": [True]}}
    style = jsonsplice.Style(indent="\t", final_newline=False)
    assert jsonsplice.render(new, tree, style) == (
        '{\n\t"a" : [1 ,2,3],\n\t"b": {"c": 1E2},\n\t"d": {\n\t\t"e": [\n\t\t\ttrue\n\t\t]\n\t}\n}'
    )


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ('{"a": "\\ud800"}', jsontext.CannotRoundTrip, "lone UTF-16 surrogate escape (\\ud800"),
        ('["\\\\ud800", "\\udc00x"]', jsontext.CannotRoundTrip, "(\\udc00: half of a character"),
        ("[" * 101 + "]" * 101, jsontext.CannotRoundTrip, "deeper than 100 levels (line 1, column 101)"),
        ("[" * 100_000 + "]" * 100_000, jsontext.CannotRoundTrip, "deeper than 100 levels"),
        ("NaN", json.JSONDecodeError, "Expecting value"),
        ('["Infinity", Infinity]', json.JSONDecodeError, "char 13"),
        ('{"a": 1,}', json.JSONDecodeError, "Expecting property name"),
        ("[1 2]", json.JSONDecodeError, "Expecting ',' delimiter"),
        ('{"a": 1} x', json.JSONDecodeError, "Extra data"),
        ('"\x01"', json.JSONDecodeError, "Invalid control character"),
        ("[１]", json.JSONDecodeError, "Expecting value"),  # a full-width digit is not a JSON digit
    ],
)
def test_refusals(text: str, kind: type[Exception], message: str) -> None:
    with pytest.raises(kind) as info:
        jsontext.parse(text)
    assert message in str(info.value)


def test_a_surrogate_pair_is_a_character() -> None:
    assert jsontext.parse('"\\ud83d\\ude00"').value == "😀"


def test_duplicate_keys_refused_only_where_an_edit_falls() -> None:
    tree = jsontext.parse('{"env": {"A": 1, "A": 2}, "hooks": {}}')
    assert tree.value["env"] == {"A": 2}  # as JSON.parse reads it
    untouched = {"env": tree.value["env"], "hooks": {"Stop": []}}
    assert jsonsplice.render(untouched, tree, jsonsplice.DEFAULT_STYLE).startswith('{"env": {"A": 1, "A": 2}')
    with pytest.raises(jsontext.CannotRoundTrip, match='has the key "A" twice'):
        jsonsplice.render({"env": {"A": 3}, "hooks": {}}, tree, jsonsplice.DEFAULT_STYLE)
