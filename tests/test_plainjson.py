"""plainjson.check: JSON bytes checked without being decoded, agreeing with
the json module (NaN and Infinity refused) and the depth cap."""

from __future__ import annotations

import json
import random

import pytest

from plugwarden.isolation.plainjson import NotPlainJSON, check, depth_within


def refuse(name: str) -> None:
    raise ValueError(name)


def accepted(text: str | bytes, depth: int = 128) -> bool:
    try:
        check(text.encode() if isinstance(text, str) else text, depth)
    except NotPlainJSON:
        return False
    return True


def expected(text: str, depth: int = 128) -> bool:
    try:
        value = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return False
    return depth_within(value, depth)


CASES = [
    "1", "-0", "01", "1.", "1.5e3", "1e", '"a"', '"\\u00e9"', '"\\x"', '"\t"', "[]", "[ ]",
    "[1,]", "[,1]", "[1 2]", "{}", '{"a":1}', '{"a":1,}', "{1:2}", '{"a"}', "NaN", "Infinity",
    "-Infinity", "true", "tru", "nulll", "  [1] ", "[1]x", "", "  ", '"é"', "[true,false,null]",
    '{"a":[1,{"b":[]}]}', "[" * 10 + "1" + "]" * 10, '{"a":[[[[[[[[1]]]]]]]],"b":2}',
    '{"a":[[[[[[[[1]]]]]]]],}', "[1,2,[[[[[[[[3]]]]]]]],4]", "[[[[[[[[3]]]]]]],]",
    "[1,[2,[3,[4,[5,[6,[7,[8,[9]]]]]]]],[[[[[[[[[[[1,]]]]]]]]]]]",
]  # fmt: skip


class TestCheck:
    @pytest.mark.parametrize("text", CASES)
    def test_agrees_with_the_json_module(self, text):
        assert accepted(text) == expected(text)

    @pytest.mark.parametrize("levels", range(120, 132))
    def test_the_depth_cap_is_exact(self, levels):
        for text in ("[" * levels + "]" * levels, '{"a":' * levels + "1" + "}" * levels):
            assert accepted(text) == (levels <= 128)

    def test_random_documents_and_their_corruptions_agree(self):
        rng = random.Random(25)

        def value(depth: int) -> object:
            roll = rng.random()
            if depth > 9 or roll < 0.3:
                return rng.choice([1, "s", None, True, 2.5, -3, "é\n"])
            if roll < 0.65:
                return [value(depth + 1) for _ in range(rng.randint(0, 4))]
            return {f"k{i}": value(depth + 1) for i in range(rng.randint(0, 4))}

        for _ in range(2000):
            text = json.dumps(value(0), ensure_ascii=rng.random() < 0.5)
            if rng.random() < 0.3 and len(text) > 1:
                at = rng.randrange(len(text))
                text = text[:at] + rng.choice(',]}[{": x') + text[at + 1 :]
            for depth in (3, 7, 128):
                assert accepted(text, depth) == expected(text, depth), (text, depth)

    def test_bytes_that_are_not_utf8_are_refused(self):
        assert not accepted(b'["\xff"]')
        assert accepted('["\u00e9\u4e2d"]'.encode())

    def test_a_long_run_of_small_values_is_checked_past_a_chunk(self):
        data = b"[" + b"{}," * 1_000_000 + b"{}]"
        check(data, 128)
        with pytest.raises(NotPlainJSON, match="byte"):
            check(data[:-1] + b",]", 128)

    def test_the_check_starts_at_an_offset(self):
        check(b"header\n[1,2]", 128, start=7)
        with pytest.raises(NotPlainJSON):
            check(b"header\n[1,2", 128, start=7)
