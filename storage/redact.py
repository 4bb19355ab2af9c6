"""Masking secrets in text (error messages, logs) without mangling the words around them.

The rule, and why:

* A secret of :data:`LONG` (8) characters or more is replaced wherever it occurs, even inside other text. Such a
  value is a password or a token; an ordinary sentence containing it by chance is practically impossible, while a
  secret glued to other characters (``tokenxoxb-…``, a quoted blob) would still be readable if it were left.
* A shorter secret is replaced only where it stands as a whole value: no letter or digit touches it on a side
  where the secret itself begins or ends with a letter or digit. That covers every place a value is shown —
  ``password=pw``, ``'pw'``, ``user:pw@host``, ``pw`` alone — and leaves ``port`` alone when the password is
  ``p``. Inside a longer word a short secret is not readable anyway: nothing tells where it begins or ends.
* Each secret is also masked in its URL-encoded forms (``p%40ss`` for ``p@ss``), which drivers and URLs show.
* Longer secrets are masked first, so a secret that contains another is masked whole, never half.

Empty and whitespace-only secrets mask nothing. The replacement is always :data:`MASK`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
LONG = 8  # secrets at least this long are masked everywhere, shorter ones only as whole values


def _forms(secret: str) -> set[str]:
    """The secret as written and as a URL would carry it."""
    return {secret, quote(secret, safe=""), quote_plus(secret, safe="")}


def _pattern(secret: str) -> str:
    """A regex matching ``secret``; a short one only where no letter or digit extends it."""
    body = re.escape(secret)
    if len(secret) >= LONG:
        return body
    head = r"(?<![^\W_])" if secret[0].isalnum() else ""
    tail = r"(?![^\W_])" if secret[-1].isalnum() else ""
    return head + body + tail


def masker(secrets: Iterable[str | None]) -> re.Pattern[str] | None:
    """One compiled pattern for every non-blank secret (and its URL-encoded forms), longest first; None if none."""
    forms = {form for secret in secrets if secret and secret.strip() for form in _forms(secret)}
    if not forms:
        return None
    return re.compile("|".join(_pattern(form) for form in sorted(forms, key=len, reverse=True)))


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``***`` under the rule of this module."""
    pattern = masker(secrets)
    return pattern.sub(MASK, text) if pattern is not None else text


# --- values typed into Slack, as libraries log whole payloads -----------------------------------------------------

# Keys whose values may be typed secrets or credentials: every ``value`` of a modal's state (a password field is a
# plain text input like any other), and fields named after secrets wherever they appear.
SECRET_KEYS = ("value", "initial_value", "password", "passphrase", "passwd", "secret", "token", "db_password",
               "client_secret", "signing_secret")  # fmt: skip
# A quote as each encoding writes it: JSON / repr ("  '), JSON inside JSON (\"  \\\"), URL-encoded (%22 %27).
_Q = r"(?:\\\\\\\"|\\\"|\"|'|%22|%27|%5C%22)"
_SEP = r"(?:\s|\+)*(?::|%3A|=)(?:\s|\+)*"
_KEYED = re.compile(
    r"(?P<head>" + _Q + r"(?:" + "|".join(SECRET_KEYS) + r")" + _Q + _SEP + r")"
    r"(?P<open>" + _Q + r")(?P<body>.*?)(?<!\\)(?<!%5C)(?P<close>(?P=open))",  # an escaped quote does not close it
    re.DOTALL,
)


def scrub_values(text: str) -> str:
    """``text`` with the value of every secret-carrying key (:data:`SECRET_KEYS`) replaced by ``***``, in JSON,
    Python reprs, JSON nested in JSON strings and URL-encoded forms alike — how Slack payloads reach log lines.

    Why not only :func:`mask`: what a person types into a modal is not known before it arrives, and the libraries
    log the raw payload before any code of the bot sees it."""
    if not any(key in text for key in ("value", "pass", "secret", "token")):
        return text
    return _KEYED.sub(lambda m: f"{m['head']}{m['open']}{MASK}{m['close']}", text)
