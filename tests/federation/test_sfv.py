"""The Structured Field subset the signature fields use (RFC 9651)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from federation import sfv
from federation.sfv import InnerList
from federation.sfv import Item
from federation.sfv import Token


def test_a_dictionary_round_trips_in_canonical_form() -> None:
    text = (
        'sig1=("@method" "signature";req;key="sig1");created=1;keyid="k \\"1\\"";flag, '
        "sha-256=:AQID:, bare;p=?0, tok=text/plain;q=-12"
    )

    members = sfv.parse_dictionary(text)

    assert members == (
        (
            "sig1",
            InnerList(
                (Item("@method"), Item("signature", (("req", True), ("key", "sig1")))),
                (("created", 1), ("keyid", 'k "1"'), ("flag", True)),
            ),
        ),
        ("sha-256", Item(b"\x01\x02\x03")),
        ("bare", Item(True, (("p", False),))),
        ("tok", Item(Token("text/plain"), (("q", -12),))),
    )
    assert sfv.serialize_dictionary(members) == text


def test_a_later_duplicate_key_wins() -> None:
    assert sfv.parse_dictionary("a=1, b=2, a=3") == (("b", Item(2)), ("a", Item(3)))


@pytest.mark.parametrize(
    "text",
    [
        "A=1",  # keys are lower case
        "a=1,",
        "a=1 b=2",
        'a="unterminated',
        'a="bad \\n escape"',
        "a=:not base64!:",
        "a=1.5",  # decimals are refused here
        "a=1234567890123456",
        "a=(1 2",
        "a=@date",
        "a=é",
    ],
)
def test_invalid_values_are_refused(text: str) -> None:
    with pytest.raises(sfv.StructuredFieldError):
        sfv.parse_dictionary(text)


@pytest.mark.parametrize("value", ["line\nbreak", "é", Token("1abc"), 10**15])
def test_unrepresentable_values_are_refused(value: sfv.BareItem) -> None:
    with pytest.raises(sfv.StructuredFieldError):
        sfv.serialize_bare_item(value)


SIGNATURE_INPUT = (
    'trivium=("@method" "@target-uri" "content-digest");created=1795263223;'
    'keyid="https://peer.example/federation/keys/k1";alg="ed25519";'
    'nonce="oN_81OpjPi4R2bd8dDSJyw";tag="trivium"'
)


def _outcome(parse: Callable[[str], sfv.Dictionary], text: str) -> object:
    try:
        return parse(text)
    except sfv.StructuredFieldError as exc:
        return ("refused", str(exc))


def _step_by_step(text: str) -> sfv.Dictionary:
    return sfv._Parser(text).dictionary()


@pytest.mark.parametrize(
    "text",
    [
        SIGNATURE_INPUT,
        "sha-256=:e6z63r7BLuErBmYQN920y7kMtnxwVKqaMsxLW2yebkE=:",
        'sig=("a" "b");x;x=2;y="";z',  # a later duplicate wins; bare and empty values
        'sig=();n=-007;m=0;k="a b"',
        "sig=()",
    ],
)
def test_signature_field_shapes_take_the_shortcut_with_the_same_result(text: str) -> None:
    assert sfv._parse_one_member(text) is not None
    assert sfv.parse_dictionary(text) == _step_by_step(text)


@pytest.mark.parametrize(
    "text",
    [
        'sig=("a";p "b")',  # item parameters
        'sig=("a\\"b")',  # an escape
        "sig=(1 2)",
        'sig=("a");p=?1',
        'sig=("a");n=1234567890123456',
        "sig=:AQ:",  # bad padding: the parser words the error
        'sig=("a"), other=:AQID:',
        ' sig=("a")',
    ],
)
def test_other_shapes_are_parsed_step_by_step(text: str) -> None:
    shortcut = sfv._parse_one_member(text)
    assert shortcut is None
    assert _outcome(sfv.parse_dictionary, text) == _outcome(_step_by_step, text)


def test_the_shortcut_agrees_with_the_parser_on_mangled_fields() -> None:
    rng = random.Random(9421)
    pieces = [*' \t=,;()"\\:?-*._/azAZ09+', "é", '"x"', ":AQID:", "?0", "key", "1"]
    seeds = [SIGNATURE_INPUT, "sha-256=:AQID:", 'sig=("a" "b");x;x=2;y=""']
    shortcuts = 0
    for _ in range(3000):
        chars = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars) + 1)
            if rng.random() < 0.5 and chars:
                del chars[min(at, len(chars) - 1)]
            else:
                chars.insert(at, rng.choice(pieces))
        text = "".join(chars)
        shortcuts += text.isascii() and sfv._parse_one_member(text) is not None
        assert _outcome(sfv.parse_dictionary, text) == _outcome(_step_by_step, text), text
    assert shortcuts > 100  # the comparison covered the shortcut, not only the fallback
