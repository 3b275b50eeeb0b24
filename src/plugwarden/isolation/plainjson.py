"""Checking JSON bytes without building them
(docs/guides/isolation.md#the-worker-boundary).

The host passes a worker's result on as the bytes the worker sent; it must
still know that they are plain JSON (no NaN or Infinity, integers of sane
length, valid UTF-8) nesting at most a depth cap, and without decoding them
into Python objects: a 17 MB list of empty objects decodes into ~900 MB.

:func:`check` walks the text with regular expressions that each match in C:
a value up to ``_LEAF_HEIGHT`` levels tall is one match, and a container's
run of such items another; Python steps only over containers taller than
that. Nothing is built but match objects.
"""

from __future__ import annotations

import codecs
import re
from functools import cache
from typing import Any

__all__ = ["NotPlainJSON", "check", "depth_within", "nests_within"]

_LEAF_HEIGHT = 6  # values up to this height are matched whole, in C
_WALK_BELOW = 64 * 1024  # a shorter value's depth is walked in Python
_CHUNK = 1 << 20  # UTF-8 is checked, and runs matched, a chunk at a time: no match
# holds the GIL for long (the host's event loop and other calls go on meanwhile)

_WS = rb"[ \t\n\r]*+"
_STRING = rb'"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"'
# At most 4300 digits before the point: what Python decodes (int_max_str_digits).
_NUMBER = rb"-?+(?:0|[1-9][0-9]{0,4299}+)(?![0-9])(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
_SCALAR = rb"(?:" + _STRING + rb"|" + _NUMBER + rb"|true|false|null)"
_KEY = _STRING + _WS + rb":" + _WS
_OPEN, _CLOSE = b"[{", {ord("["): ord("]"), ord("{"): ord("}")}


class NotPlainJSON(ValueError):
    """What is wrong with the text, and where."""


def _items(value: bytes, bracket: int) -> bytes:
    """A run of a container's items, each followed by a comma and another
    item, or by the closing bracket (not consumed). The run stops before an
    item it cannot match whole (a taller one, or an error)."""
    close = re.escape(bytes([_CLOSE[bracket]]))
    key = _KEY if bracket == ord("{") else b""
    ends = rb"(?:," + _WS + rb"(?!" + close + rb")|(?=" + close + rb"))"
    return rb"(?:" + key + value + _WS + ends + rb")*+"


@cache
def _value(height: int) -> bytes:
    """A value at most ``height`` levels tall."""
    if height == 0:
        return _SCALAR
    inner = _value(height - 1)
    array = rb"\[" + _WS + _items(inner, ord("[")) + rb"\]"
    table = rb"\{" + _WS + _items(inner, ord("{")) + rb"\}"
    return rb"(?:" + _SCALAR + rb"|" + array + rb"|" + table + rb")"


@cache
def _leaf(height: int) -> re.Pattern[bytes]:
    return re.compile(_value(height))


@cache
def _run(bracket: int, height: int) -> re.Pattern[bytes]:
    return re.compile(_items(_value(height), bracket))


_space = re.compile(_WS)
_key = re.compile(_KEY)


def check(data: bytes | bytearray, max_depth: int, start: int = 0) -> None:
    """Raise :class:`NotPlainJSON` unless ``data[start:]`` is one plain JSON
    value whose lists and objects nest at most ``max_depth`` deep."""
    _check_utf8(data, start)
    end = len(data)
    stack = bytearray()  # the open containers' brackets
    pos = _skip(data, start)
    expect = "value"
    while True:
        if expect == "value":
            room = max_depth - len(stack)
            leaf = _leaf(max(0, min(_LEAF_HEIGHT, room))).match(data, pos)
            if leaf is not None:
                pos, expect = leaf.end(), "next"
            elif pos < end and data[pos] in _OPEN:
                if room < 1:
                    raise NotPlainJSON(f"nests deeper than {max_depth} levels (byte {pos})")
                stack.append(data[pos])
                pos = _skip(data, pos + 1)
                if pos < end and data[pos] == _CLOSE[stack[-1]]:  # empty
                    stack.pop()
                    pos, expect = pos + 1, "next"
                else:
                    expect = "items"
            else:
                raise NotPlainJSON(f"expected a value at byte {pos}")
        elif expect == "items":  # after an opening bracket or a comma: an item follows
            top = stack[-1]
            pattern = _run(top, max(0, min(_LEAF_HEIGHT, max_depth - len(stack))))
            run = pattern.match(data, pos, min(end, pos + _CHUNK))
            assert run is not None
            if run.end() > pos and run.end() < end and data[run.end()] == _CLOSE[top]:
                stack.pop()
                pos, expect = run.end() + 1, "next"
            elif run.end() > pos:  # ended after a comma: at the chunk's end, or a tall item
                pos = run.end()
            elif top == ord("{"):
                key = _key.match(data, run.end())
                if key is None:
                    raise NotPlainJSON(f"expected a string key at byte {run.end()}")
                pos, expect = key.end(), "value"
            else:
                pos, expect = run.end(), "value"
        else:  # after a value
            pos = _skip(data, pos)
            if not stack:
                if pos != end:
                    raise NotPlainJSON(f"unexpected text after the value at byte {pos}")
                return
            if pos < end and data[pos] == ord(","):
                pos, expect = _skip(data, pos + 1), "items"
            elif pos < end and data[pos] == _CLOSE[stack[-1]]:
                stack.pop()
                pos += 1
            else:
                raise NotPlainJSON(f"expected ',' or a closing bracket at byte {pos}")


def _skip(data: bytes | bytearray, pos: int) -> int:
    return _space.match(data, pos).end()  # type: ignore[union-attr]


def _check_utf8(data: bytes | bytearray, start: int) -> None:
    """Chunk by chunk: nothing the size of ``data`` is made."""
    view = memoryview(data)
    chunks = [view[offset : offset + _CHUNK] for offset in range(start, len(data), _CHUNK)]
    if all(bytes(chunk).isascii() for chunk in chunks):
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in chunks:
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise NotPlainJSON(f"not UTF-8 at byte {start + exc.start} ({exc.reason})") from None


def depth_within(value: Any, limit: int) -> bool:
    """Whether lists and objects in ``value`` nest at most ``limit`` deep."""
    if not isinstance(value, dict | list):
        return True
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def nests_within(text: bytes, value: Any, limit: int) -> bool:
    """Whether ``value``, encoded as ``text``, nests at most ``limit`` deep:
    a short one walked, a long one checked as text, in C (walking 22 million
    small objects in Python took 43 s; checking their text, 3.6 s)."""
    if len(text) <= 2 * limit:  # each level takes two bytes: no walk needed
        return True
    if len(text) <= _WALK_BELOW:
        return depth_within(value, limit)
    try:
        check(text, limit)
    except NotPlainJSON:
        return False
    return True
