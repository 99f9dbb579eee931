"""JSON for the hook handler, through CPython's C accelerator ``_json`` directly.

``import json`` costs about 8 ms per process (json.decoder and json.encoder import ``re``, which imports
``enum`` and ``functools``), as much as the rest of a hook call. The C scanner and encoder underneath need
none of that, and give byte-identical results for what the handler reads and writes (tests compare them with
``json`` on every captured payload). Where ``_json`` is missing or its signature has changed (another Python
implementation or version), this falls back to the ``json`` module: slower, never wrong.

``loads`` accepts what ``json.loads`` accepts (strict: no raw control characters in strings, and
NaN/Infinity parsed as floats). ``dumps`` is ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"))``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _ScannerContext:
    # The attributes _json.make_scanner reads, with json.loads' defaults.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict[str, str] = {}  # noqa: RUF012 - read by the C scanner, which keeps its own memo


def _not_serializable(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _c_codec() -> tuple[Callable[[str, int], tuple[Any, int]], Callable[[Any, int], Any]] | None:
    try:
        from _json import encode_basestring, make_encoder, make_scanner

        # typeshed types the context as a scanner; the C code only reads the attributes _ScannerContext has.
        scan = make_scanner(_ScannerContext())  # type: ignore[arg-type]
        encode = make_encoder(None, _not_serializable, encode_basestring, None, ":", ",", False, False, True)
        # Prove the signatures on a sample before trusting them.
        if scan('{"a":[1,2.5,"\\u00e9",null,true]}', 0)[0] != {"a": [1, 2.5, "é", None, True]}:
            return None
        if "".join(encode({"a": ["é", 1, None]}, 0)) != '{"a":["é",1,null]}':
            return None
    except Exception:
        return None
    return scan, encode


_CODEC = _c_codec()


class DecodeError(ValueError):
    """Not JSON (a ValueError, as json.JSONDecodeError is)."""


def loads(text: str | bytes) -> Any:
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    if _CODEC is None:
        import json

        return json.loads(text)
    start = 0
    end = len(text)
    while start < end and text[start] in _WHITESPACE:
        start += 1
    while end > start and text[end - 1] in _WHITESPACE:
        end -= 1
    if start == end:
        raise DecodeError("Expecting value: empty document")
    try:
        obj, stop = _CODEC[0](text, start)
    except StopIteration:
        raise DecodeError(f"Expecting value at character {start}") from None
    except (ValueError, SystemError):
        # Malformed input. The C scanner builds its error from json.decoder.JSONDecodeError but (3.11) does
        # not import that module itself, and without it fails with a SystemError. Errors are rare: let the
        # json module raise the proper JSONDecodeError (a ValueError).
        import json

        return json.loads(text)
    if stop != end:
        raise DecodeError(f"Extra data at character {stop}")
    return obj


def dumps(obj: Any) -> str:
    if _CODEC is None:
        import json

        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return "".join(_CODEC[1](obj, 0))
