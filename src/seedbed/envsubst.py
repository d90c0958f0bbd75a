"""Flux's postBuild variable substitution, as kustomize-controller runs it on every object it applies.

A port of fluxcd/pkg ``envsubst`` v1.7.0 (Flux's fork of drone/envsubst: ``parse/scan.go``,
``parse/parse.go``, ``template.go``, ``funcs.go``, ``path/match.go``), called by fluxcd/pkg
``kustomize/kustomize_varsub.go`` (kustomize v1.35.4, which kustomize-controller v1.9.4 of Flux v2.9.3
requires, with envsubst v1.7.0) ``varSubstitution`` with kustomize-controller's
default, non-strict lookup (``vars[s], true``: an unset variable reads as the empty string).

Written by hand because no Python library speaks this dialect: ``os.path.expandvars``, ``expandvars``
and ``envsubst`` on PyPI substitute a bare ``$VAR`` (Flux leaves it alone), none turns every ``$$``
into ``$`` as Flux does, and none has its functions (``${VAR/./-}``, ``${VAR:=${OTHER}}``...) or its
errors (``${VAR-x}`` and ``${a.b}`` fail the whole Kustomization). Real repositories use all of
these (tests/test_envsubst.py reads them from the public GitOps trees in the fixtures).

When written, this port gave the expected output for all 34 cases of upstream's own table
(``envsubst/eval_test.go`` TestExpand); tests/test_envsubst.py holds seedbed's own cases.

The parser keeps upstream's scanner (a cursor over a buffer that an escape edits in place) rather
than a regular expression, so that odd inputs parse exactly as upstream parses them. What differs:
Go works on UTF-8 bytes, this on characters, so ``${VAR:1:2}`` and the ``#``/``%`` trims of a
non-ASCII value may cut elsewhere (``${#VAR}`` counts bytes, as upstream); and two hooks upstream has
no need for: ``keep_unset`` (a variable whose source seedbed could not read stays as written) and
``missing`` (the names read while unset).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

import msgspec

__all__ = ["VAR_NAME_PATTERN", "SubstitutionError", "envsubst", "valid_name"]


class SubstitutionError(ValueError):
    """Flux fails the Kustomization with this (upstream's message: ``bad substitution``...)."""


# kustomize_varsub.go varsubRegex: every variable's name is checked before substituting (RE2's
# [:alpha:] and [:digit:] are ASCII); one invalid name fails the Kustomization.
VAR_NAME_PATTERN = "^[_[:alpha:]][_[:alpha:][:digit:]]*$"


def valid_name(name: str) -> bool:
    return bool(name) and name.isascii() and (name[0].isalpha() or name[0] == "_") \
        and all(c.isalnum() or c == "_" for c in name)


_BAD = "bad substitution"
_NO_CLOSE = "missing closing brace"
_NO_NAME = "unable to parse variable name"
_BAD_ARG = "unable to parse substitution within function"
_BAD_DEFAULT = "unable to parse default function"
_DEFAULT_OPS = frozenset({"-", "+", "=", "?", ":-", ":+", ":=", ":?"})  # template.go isDefaultOp


def envsubst(text: str, variables: Mapping[str, str], *, keep_unset: bool = False,
             missing: list[str] | None = None) -> str:
    """``text`` with every ``${...}`` expression evaluated over ``variables``; raises SubstitutionError
    where Flux fails. An unset variable reads as ``""`` (or, with ``keep_unset``, stays as written);
    its name is added to ``missing`` unless the expression supplies a default."""
    try:
        return _evaluate(_Parser(text).parse(), variables, keep_unset, missing)
    except RecursionError:
        # Upstream's Go stack grows; Python's does not. No real value nests defaults this deep.
        raise SubstitutionError("expressions nested too deeply") from None


def _evaluate(root: _Node, variables: Mapping[str, str], keep_unset: bool, missing: list[str] | None) -> str:

    def evaluate(node: _Node) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, list):
            return "".join(evaluate(n) for n in node)
        args = [evaluate(a) for a in node.args]
        value = variables.get(node.param)
        if value is None:
            if node.name not in _DEFAULT_OPS:
                if missing is not None:
                    missing.append(node.param)
                if keep_unset:
                    return node.raw
            value = ""
        return _function(node.name, len(args))(value, args)

    return evaluate(root)


# --------------------------------------------------------------------------- parse (parse/*.go)

_IDENT, _LBRACK, _RBRACK, _ESCAPE = 1, 2, 4, 8  # scanner modes
_DOLLAR, _BACKSLASH = 1, 2  # escapable characters
_EOF = ""  # upstream's rune(0)
_TOK_ILLEGAL, _TOK_EOF, _TOK_IDENT, _TOK_LBRACK, _TOK_RBRACK = range(5)

Accept = Callable[[str, int], bool]


class _Func(msgspec.Struct):
    param: str = ""
    name: str = ""
    args: list[_Node] = msgspec.field(default_factory=list)
    raw: str = ""  # the expression as written (for keep_unset)


_Node: TypeAlias = "str | list[_Node] | _Func"


def _accept_ident(r: str, i: int) -> bool:
    return r.isalpha() or r.isdecimal() or r == "_"  # Go unicode.IsLetter, IsDigit


def _accept_default_func(r: str, i: int) -> bool:
    return (i == 1 and r == ":") or (i == 2 and r in "=-?+")


def _accept_replace_func(r: str, i: int) -> bool:
    return (i == 1 and r == "/") or (i == 2 and r in "/#%")


# scan.go's other accept functions: (character, its 1-based position in the token) -> accepted
def _accept_any(r: str, i: int) -> bool:
    return True


def _accept_colon(r: str, i: int) -> bool:
    return r == ":"


def _accept_one_hash(r: str, i: int) -> bool:
    return r == "#" and i == 1


def _accept_not_closing(r: str, i: int) -> bool:
    return r != "}"


def _accept_hash_func(r: str, i: int) -> bool:
    return r == "#" and i < 3


def _accept_percent_func(r: str, i: int) -> bool:
    return r == "%" and i < 3


def _accept_one_equal(r: str, i: int) -> bool:
    return i == 1 and r == "="


def _accept_one_colon(r: str, i: int) -> bool:
    return i == 1 and r == ":"


def _reject_colon_close(r: str, i: int) -> bool:
    return r not in (":", "}")


def _accept_slash(r: str, i: int) -> bool:
    return r == "/"


def _accept_not_slash(r: str, i: int) -> bool:
    return r != "/"


def _accept_casing(r: str, i: int) -> bool:
    return r in (",", "^") and i < 3


class _Parser:
    """parse.go's Tree with scan.go's scanner folded in (same names, same steps)."""

    def __init__(self, text: str) -> None:
        self.buf, self.pos, self.start, self.width = text, 0, 0, 0
        self.mode, self.escapes = 0, 0
        self.accept: Accept = _accept_any

    # scanner
    def read(self) -> str:
        if self.pos >= len(self.buf):
            self.width = 0
            return _EOF
        self.width = 1
        self.pos += 1
        return self.buf[self.pos - 1]

    def unread(self) -> None:
        self.pos -= self.width

    def skip(self) -> None:  # drop the character just read (the first of an escape pair)
        self.buf = self.buf[:self.pos - 1] + self.buf[self.pos:]

    def peek(self) -> str:
        r = self.read()
        self.unread()
        return r

    def string(self) -> str:
        return self.buf[self.start:self.pos]

    def scan(self) -> int:
        self.start = self.pos
        r = self.read()
        if r == _EOF:
            return _TOK_EOF
        if self.scan_lbrack(r):
            return _TOK_LBRACK
        if self.mode & _RBRACK and r == "}":
            return _TOK_RBRACK
        if self.scan_ident(r):
            return _TOK_IDENT
        return _TOK_ILLEGAL

    def scan_ident(self, r: str) -> bool:
        if not self.mode & _IDENT:
            return False
        if self.escaped(r):
            self.skip()
        elif not self.accept(r, self.pos - self.start):
            return False
        while True:
            if self.accept is _accept_any:
                # Top-level text (parseAny): only a `$` can end or change it, so go straight to the next.
                nxt = self.buf.find("$", self.pos)
                self.pos = len(self.buf) if nxt < 0 else nxt
            r = self.read()
            if r == _EOF:
                self.unread()
                return True
            if self.scan_lbrack(r):
                self.unread()
                self.unread()
                return True
            if self.escaped(r):
                self.skip()
                continue
            if not self.accept(r, self.pos - self.start):
                self.unread()
                return True

    def scan_lbrack(self, r: str) -> bool:
        if not self.mode & _LBRACK or r != "$":
            return False
        if self.read() == "{":
            return True
        self.unread()
        return False

    def escaped(self, r: str) -> bool:
        if not self.mode & _ESCAPE:
            return False
        if r == "$" and self.escapes & _DOLLAR and self.peek() == "$":
            return True
        return r == "\\" and bool(self.escapes & _BACKSLASH) and self.peek() in ("/", "\\")

    # parser
    def parse(self) -> _Node:
        nodes: list[_Node] = []
        while True:  # parseAny, as a loop instead of right recursion
            self.accept, self.mode, self.escapes = _accept_any, _IDENT | _LBRACK | _ESCAPE, _DOLLAR
            tok = self.scan()
            if tok == _TOK_EOF:
                return nodes[0] if len(nodes) == 1 else nodes
            if tok == _TOK_IDENT:
                nodes.append(self.string())
            elif tok == _TOK_LBRACK:
                nodes.append(self.func())
            else:
                raise SubstitutionError(_BAD)

    def func(self) -> _Func:
        """After ``${``: parseFunc, keeping the expression as written."""
        begin = self.pos - 2
        node = self._func()
        node.raw = self.buf[begin:self.pos]
        return node

    def _func(self) -> _Func:
        self.escapes = _DOLLAR | _BACKSLASH
        if self.peek() == "#":
            return self.len_func()
        self.accept, self.mode = _accept_ident, _IDENT
        if self.scan() != _TOK_IDENT:
            raise SubstitutionError(_NO_NAME)
        name = self.string()
        nxt = self.peek()
        if nxt == ":":
            return self.default_or_substr(name)
        if nxt == "=":
            return self.default_func(name)
        if nxt in (",", "^"):
            return self.simple_func(name, _accept_casing)
        if nxt == "/":
            return self.replace_func(name)
        if nxt in ("#", "%"):
            node = self.simple_func(name, _accept_hash_func if nxt == "#" else _accept_percent_func, close=False)
            node.args.append(self.param(_accept_not_closing, _IDENT))
            self.consume_rbrack()
            return node
        self.accept, self.mode = _accept_ident, _RBRACK
        if self.scan() != _TOK_RBRACK:
            raise SubstitutionError(_NO_CLOSE)
        return _Func(param=name)

    def param(self, accept: Accept, mode: int) -> _Node:
        self.accept, self.mode = accept, mode | _LBRACK
        tok = self.scan()
        if tok == _TOK_LBRACK:
            return self.func()
        if tok in (_TOK_IDENT, _TOK_RBRACK):
            return self.string()
        raise SubstitutionError(_BAD_ARG)

    def operator(self, accept: Accept, error: str = _BAD) -> str:
        self.accept, self.mode = accept, _IDENT
        if self.scan() != _TOK_IDENT:
            raise SubstitutionError(error)
        return self.string()

    def simple_func(self, name: str, accept: Accept, *, close: bool = True) -> _Func:
        """parseCasingFunc (and the operator of parseRemoveFunc)."""
        node = _Func(param=name, name=self.operator(accept))
        if close:
            self.consume_rbrack()
        return node

    def default_or_substr(self, name: str) -> _Func:
        self.read()
        r = self.peek()
        self.unread()
        return self.default_func(name) if r in ("=", "-", "?", "+") else self.substr_func(name)

    def substr_func(self, name: str) -> _Func:
        node = _Func(param=name, name=self.operator(_accept_one_colon))
        node.args.append(self.param(_reject_colon_close, _IDENT))
        self.accept, self.mode = _accept_colon, _IDENT | _RBRACK
        tok = self.scan()
        if tok == _TOK_RBRACK:
            return node
        if tok != _TOK_IDENT:
            raise SubstitutionError(_BAD)
        node.args.append(self.param(_accept_not_closing, _IDENT))
        self.consume_rbrack()
        return node

    def replace_func(self, name: str) -> _Func:
        node = _Func(param=name, name=self.operator(_accept_replace_func))
        node.args.append(self.param(_accept_not_slash, _IDENT | _ESCAPE))
        self.operator(_accept_slash)
        if self.peek() != "}":
            node.args.append(self.param(_accept_not_closing, _IDENT | _ESCAPE))
        self.consume_rbrack()
        return node

    def default_func(self, name: str) -> _Func:
        accept = _accept_one_equal if self.peek() == "=" else _accept_default_func
        node = _Func(param=name, name=self.operator(accept, _BAD_DEFAULT))
        while self.peek() != "}":
            node.args.append(self.param(_accept_not_closing, _IDENT))
        self.consume_rbrack()
        return node

    def len_func(self) -> _Func:
        node = _Func(name=self.operator(_accept_one_hash))
        node.param = self.operator(_accept_ident)
        self.consume_rbrack()
        return node

    def consume_rbrack(self) -> None:
        self.mode = _RBRACK
        if self.scan() != _TOK_RBRACK:
            raise SubstitutionError(_BAD)


# --------------------------------------------------------------------------- evaluate (template.go, funcs.go)

Function = Callable[[str, list[str]], str]


def _function(name: str, nargs: int) -> Function:
    """template.go lookupFunc: an operator not listed (and every default operator) is toDefault."""
    if name == "#":
        return _to_len if nargs == 0 else _trim_shortest_prefix
    return _FUNCTIONS.get(name, _to_default)


def _to_len(s: str, args: list[str]) -> str:
    return str(len(s.encode()))  # Go len(): bytes


def _to_default(s: str, args: list[str]) -> str:
    return "".join(args) if not s and args else s


def _first(f: Callable[[str], str]) -> Function:
    return lambda s, args: f(s[0]) + s[1:] if s else s


def _substr(s: str, args: list[str]) -> str:
    try:
        pos = _atoi(args[0])
    except ValueError:
        return s  # as bash: a position that is not a number gives the value
    if pos < 0:
        pos = max(len(s) + pos, 0)
    if len(args) == 1:
        return s[pos:]
    try:
        length = _atoi(args[1])
    except ValueError:
        return s
    if pos + length >= len(s):
        return s[pos:]
    return s[pos:pos + length]


def _atoi(text: str) -> int:
    """Go strconv.Atoi: an optional sign and decimal digits, nothing else (no spaces, no ``_``)."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(text)
    return int(text)


def _replace(count: int) -> Function:
    return lambda s, args: s.replace(args[0], args[1] if len(args) > 1 else "", count) if args else s


def _replace_prefix(s: str, args: list[str]) -> str:
    return s.replace(args[0], args[1], 1) if len(args) == 2 and s.startswith(args[0]) else s


def _replace_suffix(s: str, args: list[str]) -> str:
    return s.removesuffix(args[0]) + args[1] if len(args) == 2 and s.endswith(args[0]) else s


def _trim_shortest(s: str, pattern: str) -> str:
    shortest = ""
    for i in range(len(s)):  # every prefix, longest first, never the empty one
        matched = _match(pattern, s[:len(s) - i])
        if matched is None:
            return s
        if matched:
            shortest = s[:len(s) - i]
    return s.removeprefix(shortest) if shortest else s


def _trim_longest(s: str, pattern: str) -> str:
    for i in range(len(s)):
        matched = _match(pattern, s[:len(s) - i])
        if matched is None:
            return s
        if matched:
            return s.removeprefix(s[:len(s) - i])
    return s


def _trim_shortest_prefix(s: str, args: list[str]) -> str:
    return _trim_shortest(s, args[0]) if args else s


def _trim_longest_prefix(s: str, args: list[str]) -> str:
    return _trim_longest(s, args[0]) if args else s


def _trim_shortest_suffix(s: str, args: list[str]) -> str:
    # Upstream reverses the value and the pattern text alike, so a pattern with a class or an escape
    # reads backwards too; kept as it is.
    return _trim_shortest(s[::-1], args[0][::-1])[::-1] if args else s


def _trim_longest_suffix(s: str, args: list[str]) -> str:
    return _trim_longest(s[::-1], args[0][::-1])[::-1] if args else s


_FUNCTIONS: dict[str, Function] = {
    ",": _first(str.lower), ",,": lambda s, a: s.lower(), "^": _first(str.upper), "^^": lambda s, a: s.upper(),
    "##": _trim_longest_prefix, "%": _trim_shortest_suffix, "%%": _trim_longest_suffix, ":": _substr,
    "/#": _replace_prefix, "/%": _replace_suffix, "/": _replace(1), "//": _replace(-1),
}


# --------------------------------------------------------------------------- glob (path/match.go)

def _match(pattern: str, name: str) -> bool | None:
    """path/match.go Match: ``*`` (any run, ``/`` included: upstream's change to Go's path.Match),
    ``?``, ``[a-z]``/``[^a-z]``, ``\\`` escapes. None for a malformed pattern (ErrBadPattern)."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return True  # a trailing * takes the rest
        rest = _match_chunk(chunk, name)
        if rest is _BAD_PATTERN:
            return None
        if isinstance(rest, str) and (not rest or pattern):
            name = rest
            continue
        if star:
            for i in range(len(name)):
                rest = _match_chunk(chunk, name[i + 1:])
                if rest is _BAD_PATTERN:
                    return None
                if isinstance(rest, str):
                    if not pattern and rest:
                        continue
                    name = rest
                    break
            else:
                return False
            continue
        return False
    return not name


_BAD_PATTERN = object()  # ErrBadPattern


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = pattern.startswith("*")
    pattern = pattern.lstrip("*")
    in_range, i = False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: str, s: str) -> str | object | None:
    """What is left of ``s`` after ``chunk`` matched its start; None when it does not match."""
    while chunk:
        if not s:
            return None
        c = chunk[0]
        if c == "[":
            r, s, chunk = s[0], s[1:], chunk[1:]
            negated = chunk.startswith("^")
            chunk = chunk[1:] if negated else chunk
            matched, ranges = False, 0
            while True:
                if chunk.startswith("]") and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _class_char(chunk)
                if lo is None:
                    return _BAD_PATTERN
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _class_char(chunk[1:])
                    if hi is None:
                        return _BAD_PATTERN
                matched = matched or lo <= r <= hi
                ranges += 1
            if matched == negated:
                return None
            continue
        if c == "?":
            s, chunk = s[1:], chunk[1:]
            continue
        if c == "\\":
            chunk = chunk[1:]
            if not chunk:
                return _BAD_PATTERN
        if chunk[0] != s[0]:
            return None
        s, chunk = s[1:], chunk[1:]
    return s


def _class_char(chunk: str) -> tuple[str | None, str]:
    """getEsc: one character of a class (``\\`` escapes the next); None when malformed."""
    if not chunk or chunk[0] in "-]":
        return None, chunk
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            return None, chunk
    rest = chunk[1:]
    return (chunk[0] if rest else None), rest
