"""Secrets never reach a screen, a log, the `runs` table or MLflow.

One place knows what a secret looks like: a password inside a URL (the userinfo password, read
the way SQLAlchemy's `make_url` and libpq read it, and `?password=` style query parameters), a
`password=...` keyword in a libpq connection string, and every value that config loading
expanded from a `${VAR}` reference into a password position (registered here by `remember`).
Every user-facing text (errors, `config show`, run messages, MLflow params) goes through
`redact`.

Masking errs on the side of hiding: when a URL can be read two ways (a password holding `@`,
`/`, `:` or `?`), the widest reading of "password" is masked.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import quote, unquote

MASK = "***"

PASSWORD_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword"})
"""Query-parameter / connection-string keys whose value is a password (compared lower-case)."""

_MIN_REMEMBERED = 3  # shorter values would mask ordinary words everywhere

_remembered: set[str] = set()
_remembered_lock = threading.Lock()

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_QUERY_PARAM = re.compile(r"[?&;]([^=&;#?]*)=([^&;#]*)")
_KEYWORD_PASSWORD = re.compile(
    r"(?<![\w.%-])(" + "|".join(sorted(PASSWORD_KEYS)) + r")(\s*=\s*)"
    r"('(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&;,'\"]+)",
    re.IGNORECASE,
)

Span = tuple[int, int]


def remember(value: str) -> None:
    """Treat `value` (e.g. an environment variable a config referred to) as a secret.

    Its URL-encoded form is remembered too, since that is how it appears inside a URL.
    Values shorter than 3 characters are ignored: masking them would garble every message
    (a short password inside a URL is still masked by its position).
    """
    forms = {value, quote(value, safe=""), unquote(value)}
    with _remembered_lock:
        _remembered.update(f for f in forms if len(f) >= _MIN_REMEMBERED)


def is_url(text: str) -> bool:
    """Whether `text` starts like a URL (`scheme://`), so its passwords are read as a URL's."""
    return _SCHEME.match(text) is not None


def _userinfo_password(url: str, start: int) -> Span | None:
    """Span of the userinfo password of the URL whose authority starts at `start`.

    The userinfo ends at the last `@` before the first `?`/`#` that follows the first `@`:
    this reads `app:p@ss:word@db` and `app:se/cret@db` as the whole password (libpq and
    `make_url` would stop at the first `@`, which leaves part of the password in clear).
    """
    first_at = url.find("@", start)
    if first_at < 0:
        return None
    cuts = [i for i in (url.find("?", first_at), url.find("#", first_at)) if i >= 0]
    at = url.rfind("@", start, min(cuts, default=len(url)))
    colon = url.find(":", start, at)
    if colon < 0 or "/" in url[start:colon]:  # no password, or not userinfo (make_url agrees)
        return None
    return (colon + 1, at) if at > colon + 1 else None


def _query_passwords(url: str, start: int) -> list[Span]:
    """Spans of the values of password-like query parameters anywhere after `start`."""
    return [
        match.span(2)
        for match in _QUERY_PARAM.finditer(url, start)
        if unquote(match.group(1)).strip().lower() in PASSWORD_KEYS and match.group(2)
    ]


def password_spans(text: str) -> list[Span]:
    """Where `text` (a URL, or a libpq `key=value` string) holds passwords, sorted, merged."""
    spans: list[Span] = []
    scheme = _SCHEME.match(text)
    if scheme:
        userinfo = _userinfo_password(text, scheme.end())
        spans += [userinfo] if userinfo else []
        spans += _query_passwords(text, scheme.end())
    else:
        spans += [m.span(3) for m in _KEYWORD_PASSWORD.finditer(text)]
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def passwords(text: str) -> list[str]:
    """Every password `text` holds, as written and percent-decoded, in any reading of it.

    Two readings are combined: our wide one (`password_spans`) and SQLAlchemy's `make_url`
    (the one the database drivers' URL handling follows), so a check such as "no literal
    password in the config" is passed only when neither reading finds one.
    """
    found = [text[start:end] for start, end in password_spans(text)]
    if _SCHEME.match(text) and ("@" in text or "=" in text):
        found += _make_url_passwords(text)
    return list(dict.fromkeys(found + [unquote(p) for p in found]))


def _make_url_passwords(url: str) -> list[str]:
    from sqlalchemy.engine.url import make_url  # lazy: keeps `salesml --help` fast

    try:
        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy can read: the wide reading stands alone
        return []
    found = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if key.strip().lower() in PASSWORD_KEYS:
            found += [value] if isinstance(value, str) else list(value)
    return [str(p) for p in found if p]


def redact_url(url: str) -> str:
    """`url` with its password (userinfo or `password=` query parameter) replaced by ***."""
    for start, end in reversed(password_spans(url)):
        url = url[:start] + MASK + url[end:]
    return url


def redact(text: str) -> str:
    """`text` with every URL password, `password=` keyword and remembered secret masked."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    with _remembered_lock:
        secrets = sorted(_remembered, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
