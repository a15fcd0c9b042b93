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
_PLAIN_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # printable, no quote or backslash


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

_TOKEN_FIRST = set(string.ascii_letters + "*")
_MAX_INTEGER = 999_999_999_999_999
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
# tchar (RFC 9110) plus ":" and "/"
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_INTEGER = re.compile(r"-?([0-9]*)")
_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")
# The common items in one match (a string without escapes, an integer of at
# most 15 digits, a boolean, a token); anything else, valid or not, takes
# the step-by-step path, which also words the errors.
_FAST_ITEM = re.compile(
    r'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'
    r"|(-?[0-9]{1,15})(?![0-9.])"
    r"|\?([01])"
    r"|([A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*)"
)
_PARAM_KEY = re.compile(r"; *([a-z*][a-z0-9_\-.*]*)(=?)")


class _Parser:
    """One pass over a field value (RFC 9651 section 4.2).

    Runs of characters (keys, tokens, integers, strings, base64) are read
    with one regular expression each rather than a call per character: a
    request's signature fields are parsed on every signed request.
    """

    def __init__(self, text: str) -> None:
        if not text.isascii():
            raise StructuredFieldError("structured fields are ASCII")
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def dictionary(self) -> Dictionary:
        text, size = self.text, len(self.text)
        members: dict[str, Item | InnerList] = {}
        pos = 0
        while pos < size and text[pos] == " ":
            pos += 1
        while pos < size:
            self.pos = pos
            key = self.key()
            member: Item | InnerList
            if text.startswith("=", self.pos):
                self.pos += 1
                member = self.item_or_inner_list()
            else:
                member = Item(True, self.params())
            # RFC 9651: a later duplicate key overwrites the earlier value.
            members.pop(key, None)
            members[key] = member
            pos = self.pos
            while pos < size and text[pos] in " \t":
                pos += 1
            if pos >= size:
                break
            if text[pos] != ",":
                raise StructuredFieldError(f"expected ',' at position {pos}")
            pos += 1
            while pos < size and text[pos] in " \t":
                pos += 1
            if pos >= size:
                raise StructuredFieldError("trailing comma")
        self.pos = pos
        return tuple(members.items())

    def item_or_inner_list(self) -> Item | InnerList:
        if self.text.startswith("(", self.pos):
            return self.inner_list()
        return Item(self.bare_item(), self.params())

    def inner_list(self) -> InnerList:
        text, size = self.text, len(self.text)
        pos = self.pos + 1  # after "("
        items: list[Item] = []
        while pos < size:
            while pos < size and text[pos] == " ":
                pos += 1
            if text.startswith(")", pos):
                self.pos = pos + 1
                return InnerList(tuple(items), self.params())
            self.pos = pos
            items.append(Item(self.bare_item(), self.params()))
            pos = self.pos
            if not text.startswith((" ", ")"), pos):
                raise StructuredFieldError(f"bad inner list at position {pos}")
        raise StructuredFieldError("unterminated inner list")

    def params(self) -> Params:
        text = self.text
        if not text.startswith(";", self.pos):
            return ()
        params: dict[str, BareItem] = {}
        while text.startswith(";", self.pos):
            # ";", spaces, the key and "=" if a value follows, in one match.
            match = _PARAM_KEY.match(text, self.pos)
            if match is None:
                self.pos += 1
                while text.startswith(" ", self.pos):
                    self.pos += 1
                self.key()  # raises: not a key
                raise StructuredFieldError(f"bad key at position {self.pos}")
            self.pos = match.end()
            key = match.group(1)
            value: BareItem = self.bare_item() if match.group(2) else True
            params.pop(key, None)
            params[key] = value
        return tuple(params.items())

    def key(self) -> str:
        match = _KEY.match(self.text, self.pos)
        if match is None:
            raise StructuredFieldError(f"bad key at position {self.pos}")
        self.pos = match.end()
        return match.group()

    def bare_item(self) -> BareItem:
        fast = _FAST_ITEM.match(self.text, self.pos)
        if fast is None or fast.lastindex is None:
            return self.slow_bare_item()
        self.pos = fast.end()
        kind = fast.lastindex
        value = fast.group(kind)
        if kind == 1:
            return value
        if kind == 2:
            return int(value)
        if kind == 3:
            return value == "1"
        return Token(value)

    def slow_bare_item(self) -> BareItem:
        char = self.peek()
        if char == '"':
            return self.string()
        if char == "-" or char.isdigit():
            return self.integer()
        if char == ":":
            return self.byte_sequence()
        if char == "?":
            return self.boolean()
        if char and char in _TOKEN_FIRST:
            return self.token()
        raise StructuredFieldError(f"unsupported item at position {self.pos}")

    def integer(self) -> int:
        start = self.pos
        match = _INTEGER.match(self.text, start)
        assert match is not None  # the pattern matches the empty string
        self.pos = match.end()
        if self.peek() == ".":
            raise StructuredFieldError("decimals are not accepted here")
        digits = match.group(1)
        if not digits or len(digits) > 15:
            raise StructuredFieldError(f"bad integer at position {start}")
        return int(match.group())

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
        match = _TOKEN.match(self.text, self.pos)
        assert match is not None  # the first character was checked
        self.pos = match.end()
        return Token(match.group())

    def byte_sequence(self) -> bytes:
        self.pos += 1  # opening colon
        end = self.text.find(":", self.pos)
        if end < 0:
            raise StructuredFieldError("unterminated byte sequence")
        encoded = self.text[self.pos : end]
        self.pos = end + 1
        if _BASE64.fullmatch(encoded) is None:
            raise StructuredFieldError("bad base64 in byte sequence")
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise StructuredFieldError(f"bad base64 in byte sequence: {exc}") from exc

    def boolean(self) -> bool:
        self.pos += 1  # "?"
        char = self.peek()
        self.pos += 1
        if char == "1":
            return True
        if char == "0":
            return False
        raise StructuredFieldError("bad boolean")


def parse_dictionary(value: str) -> Dictionary:
    """Parse a Dictionary field value (members in order, later duplicates winning).

    :raise StructuredFieldError: the value is not a valid Dictionary.
    """
    return _parse_one_member(value) or _Parser(value).dictionary()


_SF_KEY = r"[a-z*][a-z0-9_\-.*]*"
_SF_STRING = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
# What signature fields hold, as one match: a single member that is an inner
# list of strings with string or integer parameters, or a byte sequence.
_ONE_INNER_LIST = re.compile(
    rf"({_SF_KEY})=\(((?:{_SF_STRING}(?: {_SF_STRING})*)?)\)"
    rf"((?:;{_SF_KEY}(?:={_SF_STRING}|=-?[0-9]{{1,15}})?)*)"
)
_ONE_BYTES = re.compile(rf"({_SF_KEY})=:([A-Za-z0-9+/=]*):")
_PLAIN_STRING = re.compile(r'"([^"]*)"')
_PLAIN_PARAM = re.compile(rf';({_SF_KEY})(?:="([^"]*)"|=(-?[0-9]+))?')


def _parse_one_member(value: str) -> Dictionary | None:
    """The Dictionary of a value of the shapes above, or None to parse it step by step.

    The same result as :class:`_Parser` gives for these shapes (the tests
    compare the two), in a few matches instead of calls per character and
    item: every signed request carries three such fields.
    """
    match = _ONE_INNER_LIST.fullmatch(value) if "(" in value else None
    if match is not None:
        key, items, raw_params = match.groups()
        params: dict[str, BareItem] = {}
        for param in _PLAIN_PARAM.finditer(raw_params):
            name, text, number = param.groups()
            params.pop(name, None)  # a later duplicate wins, as in _Parser.params
            params[name] = text if text is not None else int(number) if number else True
        strings = tuple(Item(text) for text in _PLAIN_STRING.findall(items))
        return ((key, InnerList(strings, tuple(params.items()))),)
    match = _ONE_BYTES.fullmatch(value)
    if match is not None:
        try:
            return ((match.group(1), Item(base64.b64decode(match.group(2), validate=True))),)
        except binascii.Error:
            return None  # _Parser words the error
    return None


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
    if _TOKEN.fullmatch(text) is None:
        raise StructuredFieldError(f"bad token {text!r}")
    return text


def serialize_params(params: Params) -> str:
    """Serialise parameters (``;key=value``, a true boolean as ``;key``)."""
    out = []
    for key, value in params:
        if _KEY.fullmatch(key) is None:
            raise StructuredFieldError(f"bad key {key!r}")
        if value is True:
            out.append(f";{key}")
        elif type(value) is str and _PLAIN_TEXT.fullmatch(value) is not None:
            out.append(f';{key}="{value}"')  # nothing to escape
        else:
            out.append(f";{key}={serialize_bare_item(value)}")
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
