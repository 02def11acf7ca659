"""
Masking of credentials in connection strings, for logs, ``/status`` and errors.

:func:`mask_url` takes any URL or DSN an operator may configure and returns
it with every credential replaced by ``***``, keeping what helps a human find
the right server (scheme, user, host, port, path, query keys):

* URLs with a user and password (``redis://:pw@h:6379/0``,
  ``postgresql://u:pw@h/db``), also when the password holds characters that
  should have been percent-encoded (``/``, ``#``, ``?``, ``@``, ``:``);
* query strings and fragments: every value is masked, keys stay;
* libpq keyword/value DSNs (``host=h user=u password='a b'``): only the
  values of :data:`VISIBLE_DSN_KEYS` stay, every other value is masked.

A malformed URL can be read in more than one way (is this ``@`` the end of
the user info or part of a query value?); every reading that is possible is
considered and the union of what each would mask is masked. Masking too much
is the failure mode, never masking too little. Work is bounded: input longer
than :data:`MAX_LENGTH` characters, or with more than :data:`MAX_AT` ``@``
signs, is masked whole after its scheme.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "MAX_AT", "MAX_LENGTH", "VISIBLE_DSN_KEYS", "Secret", "mask_url"]

MASK: Final = "***"
#: Longer input is not parsed: everything after the scheme is masked.
MAX_LENGTH: Final = 8192
#: More ``@`` signs than this are not worth reasoning about: masked whole.
MAX_AT: Final = 32
#: libpq keywords whose values are shown; every other keyword's value is masked.
VISIBLE_DSN_KEYS: Final = frozenset({
    "application_name", "client_encoding", "connect_timeout", "dbname", "host", "hostaddr",
    "port", "sslmode", "target_session_attrs", "user",
})

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_DSN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DSN_START: Final = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=")
# host[:port] or [ipv6][:port]: what an authority without user info must look like
_AUTHORITY: Final = re.compile(r"(\[[^\]@]*\]|[^:@\[\]]*)(:\d*)?")
_PARAM_SEPARATORS: Final = frozenset("&;?#")


def mask_url(url: str) -> str:
    """Return ``url`` (a URL or a libpq DSN) with every credential masked as ``***``."""
    if not isinstance(url, str):  # a caller's bug must not print what it passed
        return MASK  # type: ignore[unreachable]
    scheme = _SCHEME.match(url)
    if len(url) > MAX_LENGTH:
        return (scheme.group() if scheme else "") + MASK
    if scheme is None and _DSN_START.match(url):
        return _mask_dsn(url)
    return _mask_uri(url, scheme.end() if scheme else 0)


def _find_any(text: str, chars: str, start: int) -> int:
    """Index of the first of ``chars`` in ``text[start:]``, else ``len(text)``."""
    for i in range(start, len(text)):
        if text[i] in chars:
            return i
    return len(text)


def _mask_uri(text: str, base: int) -> str:
    ats = [i for i in range(base, len(text)) if text[i] == "@"]
    if len(ats) > MAX_AT:
        return text[:base] + MASK
    masked = bytearray(len(text))
    # Where the authority (host[:port]) may start: each reading of the text.
    starts: list[int] = []
    end = _find_any(text, "/?#", base)
    if not ats or ("@" not in text[base:end] and _AUTHORITY.fullmatch(text, base, end)):
        starts.append(base)  # no user info at all
    # The user name ends at the first of these; a ':' there starts a password.
    colon = _find_any(text, ":/?#@", base)
    for at in ats:
        if colon < at and text[colon] == ":":
            _mark(masked, colon + 1, at)  # the password, if this '@' ends the user info
            starts.append(at + 1)
        elif colon == at:
            starts.append(at + 1)  # a user without a password
    if not starts:  # cannot tell where anything is: keep the scheme only
        return text[:base] + MASK if len(text) > base else text
    for start in starts:
        _mark_params(text, _find_any(text, "?#", start), masked)
    return _render(text, masked)


def _mark(masked: bytearray, start: int, end: int) -> None:
    masked[start:end] = b"\x01" * (end - start)


def _mark_params(text: str, pos: int, masked: bytearray) -> None:
    """Mask every value (or bare token) of the query/fragment starting at ``pos``."""
    i = pos + 1
    while i <= len(text):
        j = i
        while j < len(text) and text[j] not in _PARAM_SEPARATORS:
            j += 1
        eq = text.find("=", i, j)
        if eq >= 0:
            _mark(masked, eq + 1, j)
        else:
            _mark(masked, i, j)
        i = j + 1


def _render(text: str, masked: bytearray) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if masked[i]:
            while i < len(text) and masked[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _mask_dsn(text: str) -> str:
    """Mask a libpq ``keyword=value`` DSN (values may be quoted: ``'a b'``, ``'it\\'s'``)."""
    out: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        key = _DSN_KEY.match(text, i)
        if key is None:
            out.append(MASK)
            break
        i = key.end()
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            out.append(MASK)
            break
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value, i, ok = _dsn_value(text, i)
        if not ok:  # an unterminated quote: the rest may all be the secret
            out.append(f"{key.group()}={MASK}")
            break
        name = key.group().lower()
        if name == "dbname" and ("=" in value or "://" in value):
            value = mask_url(value)  # libpq expands a dbname that is itself a connection string
        elif name not in VISIBLE_DSN_KEYS:
            value = MASK
        out.append(f"{key.group()}={_quote(value)}")
    return " ".join(out)


def _dsn_value(text: str, i: int) -> tuple[str, int, bool]:
    """Decode one DSN value at ``i``; return (value, end, well-formed)."""
    chars: list[str] = []
    n = len(text)
    if i < n and text[i] == "'":
        i += 1
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n:
                chars.append(text[i + 1])
                i += 2
            elif c == "'":
                return "".join(chars), i + 1, True
            else:
                chars.append(c)
                i += 1
        return "", n, False
    while i < n and not text[i].isspace():
        if text[i] == "\\" and i + 1 < n:
            chars.append(text[i + 1])
            i += 2
        else:
            chars.append(text[i])
            i += 1
    return "".join(chars), i, True


def _quote(value: str) -> str:
    if value == MASK:
        return value
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Secret:
    """A secret string whose ``str``/``repr`` never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value (never log it)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
