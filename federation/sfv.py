"""Structured Field Values (RFC 9651, formerly RFC 8941): the subset HTTP signatures use.

``Signature-Input``, ``Signature`` and ``Content-Digest`` are Dictionaries whose
members are Inner Lists or Byte Sequences with Parameters.  This module parses
and serialises Dictionaries, Inner Lists and Items of every bare type but
Decimal, Date and Display String, which no field we read carries: a value of
those types is refused as malformed rather than guessed at.

The parser follows the algorithms of RFC 9651 section 4.2 step by step; the
serialiser those of section 4.1, so a parsed value serialises back to the
canonical form that RFC 9421 puts into a signature base.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from dataclasses import dataclass

__all__ = [
    "BareItem",
    "Dictionary",
    "InnerList",
    "Item",
    "Params",
    "StructuredFieldError",
    "Token",
    "parse_dictionary",
    "serialize_bare_item",
    "serialize_dictionary",
    "serialize_inner_list",
    "serialize_item",
    "serialize_params",
]


_STRING = re.compile(r'(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*')
_UNESCAPE = re.compile(r'\\(["\\])')
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


class StructuredFieldError(ValueError):
    """A field value is not a valid Structured Field of the expected type."""


@dataclass(frozen=True)
class Token:
    """A Structured Field Token (an unquoted identifier such as ``sha-256`` or ``*``)."""

    value: str


BareItem = int | str | bytes | bool | Token
Params = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True)
class Item:
    """A bare item with its parameters, in the order they were given."""

    value: BareItem
    params: Params = ()


@dataclass(frozen=True)
class InnerList:
    """A parenthesised list of items, itself carrying parameters."""

    items: tuple[Item, ...]
    params: Params = ()


Dictionary = tuple[tuple[str, Item | InnerList], ...]

_KEY_FIRST = set(string.ascii_lowercase + "*")
_KEY_CHARS = set(string.ascii_lowercase + string.digits + "_-.*")
_TOKEN_FIRST = set(string.ascii_letters + "*")
# tchar (RFC 9110) plus ":" and "/"
_TOKEN_CHARS = set(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~:/")
_BASE64_CHARS = set(string.ascii_letters + string.digits + "+/=")
_MAX_INTEGER = 999_999_999_999_999


class _Parser:
    """One pass over a field value (RFC 9651 section 4.2)."""

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise StructuredFieldError("structured fields are ASCII")
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        self.pos += 1
        return char

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def dictionary(self) -> Dictionary:
        members: dict[str, Item | InnerList] = {}
        self.skip(" ")
        while not self.at_end():
            key = self.key()
            member: Item | InnerList
            if self.peek() == "=":
                self.pos += 1
                member = self.item_or_inner_list()
            else:
                member = Item(True, self.params())
            # RFC 9651: a later duplicate key overwrites the earlier value.
            members.pop(key, None)
            members[key] = member
            self.skip(" \t")
            if self.at_end():
                break
            if self.take() != ",":
                raise StructuredFieldError(f"expected ',' at position {self.pos - 1}")
            self.skip(" \t")
            if self.at_end():
                raise StructuredFieldError("trailing comma")
        return tuple(members.items())

    def item_or_inner_list(self) -> Item | InnerList:
        if self.peek() == "(":
            return self.inner_list()
        return Item(self.bare_item(), self.params())

    def inner_list(self) -> InnerList:
        self.pos += 1  # "("
        items: list[Item] = []
        while not self.at_end():
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self.params())
            items.append(Item(self.bare_item(), self.params()))
            if self.peek() not in (" ", ")"):
                raise StructuredFieldError(f"bad inner list at position {self.pos}")
        raise StructuredFieldError("unterminated inner list")

    def params(self) -> Params:
        params: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            key = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            params.pop(key, None)
            params[key] = value
        return tuple(params.items())

    def key(self) -> str:
        if not self.peek() or self.peek() not in _KEY_FIRST:
            raise StructuredFieldError(f"bad key at position {self.pos}")
        start = self.pos
        while self.peek() and self.peek() in _KEY_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def bare_item(self) -> BareItem:
        char = self.peek()
        if char == "-" or char.isdigit():
            return self.integer()
        if char == '"':
            return self.string()
        if char == ":":
            return self.byte_sequence()
        if char == "?":
            return self.boolean()
        if char and char in _TOKEN_FIRST:
            return self.token()
        raise StructuredFieldError(f"unsupported item at position {self.pos}")

    def integer(self) -> int:
        start = self.pos
        if self.peek() == "-":
            self.pos += 1
        digits_start = self.pos
        while self.peek().isdigit():
            self.pos += 1
        if self.peek() == ".":
            raise StructuredFieldError("decimals are not accepted here")
        digits = self.text[digits_start : self.pos]
        if not digits or len(digits) > 15:
            raise StructuredFieldError(f"bad integer at position {start}")
        return int(self.text[start : self.pos])

    def string(self) -> str:
        # One regular expression instead of a loop per character: a run of
        # printable ASCII other than quote and backslash, or an escape pair.
        match = _STRING.match(self.text, self.pos + 1)
        if match is None:
            raise StructuredFieldError("unterminated string")
        end = match.end()
        if end >= len(self.text):
            raise StructuredFieldError("unterminated string")
        char = self.text[end]
        if char == "\\":
            raise StructuredFieldError("bad escape in string")
        if char != '"':
            raise StructuredFieldError("control character in string")
        self.pos = end + 1
        body = match.group(0)
        return _UNESCAPE.sub(r"\1", body) if "\\" in body else body

    def token(self) -> Token:
        start = self.pos
        self.pos += 1
        while self.peek() and self.peek() in _TOKEN_CHARS:
            self.pos += 1
        return Token(self.text[start : self.pos])

    def byte_sequence(self) -> bytes:
        self.pos += 1  # opening colon
        end = self.text.find(":", self.pos)
        if end < 0:
            raise StructuredFieldError("unterminated byte sequence")
        encoded = self.text[self.pos : end]
        self.pos = end + 1
        if not set(encoded) <= _BASE64_CHARS:
            raise StructuredFieldError("bad base64 in byte sequence")
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise StructuredFieldError(f"bad base64 in byte sequence: {exc}") from exc

    def boolean(self) -> bool:
        self.pos += 1  # "?"
        char = self.take()
        if char == "1":
            return True
        if char == "0":
            return False
        raise StructuredFieldError("bad boolean")


def parse_dictionary(value: str) -> Dictionary:
    """Parse a Dictionary field value (members in order, later duplicates winning).

    :raise StructuredFieldError: the value is not a valid Dictionary.
    """
    return _Parser(value).dictionary()


def serialize_bare_item(value: BareItem) -> str:
    """Serialise one bare item (RFC 9651 section 4.1.3.1).

    :raise StructuredFieldError: the value cannot be represented.
    """
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > _MAX_INTEGER:
            raise StructuredFieldError("integer out of range")
        return str(value)
    if isinstance(value, str):
        if _PRINTABLE.fullmatch(value) is None:
            raise StructuredFieldError("strings are printable ASCII")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    text = value.value
    if not text or text[0] not in _TOKEN_FIRST or not set(text) <= _TOKEN_CHARS:
        raise StructuredFieldError(f"bad token {text!r}")
    return text


def serialize_params(params: Params) -> str:
    """Serialise parameters (``;key=value``, a true boolean as ``;key``)."""
    out = []
    for key, value in params:
        if not key or key[0] not in _KEY_FIRST or not set(key) <= _KEY_CHARS:
            raise StructuredFieldError(f"bad key {key!r}")
        out.append(f";{key}" if value is True else f";{key}={serialize_bare_item(value)}")
    return "".join(out)


def serialize_item(item: Item) -> str:
    """Serialise an item with its parameters."""
    return serialize_bare_item(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    """Serialise an inner list: ``("a" "b");p=1``."""
    items = " ".join(serialize_item(item) for item in inner.items)
    return f"({items})" + serialize_params(inner.params)


def serialize_dictionary(members: Dictionary) -> str:
    """Serialise a Dictionary field value."""
    out = []
    for key, member in members:
        if isinstance(member, InnerList):
            out.append(f"{key}={serialize_inner_list(member)}")
        elif member.value is True:
            out.append(key + serialize_params(member.params))
        else:
            out.append(f"{key}={serialize_item(member)}")
    return ", ".join(out)
