"""The Structured Field subset the signature fields use (RFC 9651)."""

from __future__ import annotations

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
