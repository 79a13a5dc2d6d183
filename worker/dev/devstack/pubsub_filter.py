"""Pub/Sub subscription filters: the attribute filter grammar of the real service, parsed once.

Grammar (https://cloud.google.com/pubsub/docs/subscription-message-filter)::

    expr     := term ( AND term )*  |  term ( OR term )*     -- mixing AND/OR needs parentheses
    term     := NOT term | '(' expr ')' | atom
    atom     := attributes:KEY
              | attributes.KEY = "value" | attributes.KEY != "value"
              | hasPrefix(attributes.KEY, "prefix")

``KEY`` is a bare attribute key (letters, digits, ``_ - . ~ + %``) or a back-quoted one. Values are
double-quoted strings with ``\\"`` and ``\\\\`` escapes. Like the real service, a filter is at most 256
bytes and ``AND``/``OR`` may not be mixed at one level without parentheses. Evaluation is against the
message attributes only (the service filters on nothing else). A message that does not match is
acknowledged automatically: the subscriber never sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_FILTER_BYTES = 256

Predicate = Callable[[Mapping[str, str]], bool]


class FilterSyntaxError(ValueError):
    """The filter string is not valid filter syntax (the service answers INVALID_ARGUMENT)."""


@dataclass(frozen=True)
class _Token:
    kind: str  # WORD, STRING, KEY, OP, LPAREN, RPAREN, COMMA, COLON, DOT
    text: str
    pos: int


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<key>`[^`]*`)
  | (?P<op>!=|=)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<colon>:)
  | (?P<dot>\.)
  | (?P<word>[A-Za-z0-9_\-~+%]+)
    """,
    re.VERBOSE,
)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise FilterSyntaxError(f"unexpected character {text[pos]!r} at offset {pos}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Token(kind.upper(), match.group(), pos))
        pos = match.end()
    return tokens


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, kind: str, text: str | None = None, *, what: str | None = None) -> _Token:
        """Consume a token of ``kind`` (and exact ``text`` when given); ``what`` names it in errors."""
        expected = what or text or kind
        token = self.peek()
        if token is None:
            raise FilterSyntaxError(f"unexpected end of filter, expected {expected}")
        if token.kind != kind or (text is not None and token.text != text):
            raise FilterSyntaxError(f"expected {expected} at offset {token.pos}, got {token.text!r}")
        self.index += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.expr()
        token = self.peek()
        if token is not None:
            raise FilterSyntaxError(f"unexpected {token.text!r} at offset {token.pos}")
        return predicate

    def expr(self) -> Predicate:
        terms = [self.term()]
        joiner: str | None = None
        while (token := self.peek()) is not None and token.kind == "WORD" and token.text in ("AND", "OR"):
            if joiner is not None and token.text != joiner:
                raise FilterSyntaxError(
                    f"AND and OR cannot be mixed without parentheses (offset {token.pos})"
                )
            joiner = token.text
            self.index += 1
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        parts = tuple(terms)
        if joiner == "AND":
            return lambda attrs: all(part(attrs) for part in parts)
        return lambda attrs: any(part(attrs) for part in parts)

    def term(self) -> Predicate:
        token = self.peek()
        if token is None:
            raise FilterSyntaxError("unexpected end of filter")
        if token.kind == "WORD" and token.text == "NOT":
            self.index += 1
            inner = self.term()
            return lambda attrs: not inner(attrs)
        if token.kind == "LPAREN":
            self.index += 1
            inner = self.expr()
            self.take("RPAREN", ")")
            return inner
        if token.kind == "WORD" and token.text == "hasPrefix":
            self.index += 1
            self.take("LPAREN", "(")
            key = self.attribute_key(after_dot=True)
            self.take("COMMA", ",")
            prefix = _unquote(self.take("STRING", what="a quoted prefix").text)
            self.take("RPAREN", ")")
            return lambda attrs: (value := attrs.get(key)) is not None and value.startswith(prefix)
        return self.atom()

    def attribute_key(self, *, after_dot: bool) -> str:
        self.take("WORD", "attributes")
        self.take("DOT" if after_dot else "COLON")
        token = self.peek()
        if token is None:
            raise FilterSyntaxError("expected an attribute key")
        self.index += 1
        if token.kind == "KEY":
            return token.text[1:-1]
        if token.kind != "WORD" or token.text in ("AND", "OR", "NOT"):
            raise FilterSyntaxError(f"expected an attribute key at offset {token.pos}, got {token.text!r}")
        # Bare keys may contain dots (``attributes.a.b``): glue WORD (DOT WORD)* back together.
        key = token.text
        while (
            (dot := self.peek()) is not None
            and dot.kind == "DOT"
            and self.index + 1 < len(self.tokens)
            and self.tokens[self.index + 1].kind == "WORD"
        ):
            key += "." + self.tokens[self.index + 1].text
            self.index += 2
        return key

    def atom(self) -> Predicate:
        token = self.peek()
        if token is None or token.kind != "WORD" or token.text != "attributes":
            where = "end of filter" if token is None else f"{token.text!r} at offset {token.pos}"
            raise FilterSyntaxError(f"expected 'attributes', NOT, hasPrefix or '(' but got {where}")
        following = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
        if following is not None and following.kind == "COLON":
            key = self.attribute_key(after_dot=False)
            return lambda attrs: key in attrs
        key = self.attribute_key(after_dot=True)
        operator = self.take("OP", what="= or !=").text
        value = _unquote(self.take("STRING", what="a quoted value").text)
        if operator == "=":
            return lambda attrs: attrs.get(key) == value
        # Real service: `attributes.k != "v"` matches messages without the key too.
        return lambda attrs: attrs.get(key) != value


def compile_filter(text: str) -> Predicate:
    """Parse a subscription filter; the empty filter matches everything.

    Raises FilterSyntaxError (INVALID_ARGUMENT at the API) on bad syntax or a filter over 256 bytes.
    """
    if not text.strip():
        return lambda attrs: True
    if len(text.encode("utf-8")) > MAX_FILTER_BYTES:
        raise FilterSyntaxError(f"filter is longer than {MAX_FILTER_BYTES} bytes")
    return _Parser(text).parse()
