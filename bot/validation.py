"""Validation of what people type: host names, ports, user names, paths.

Everything reaching a remote command goes through argument lists and shlex quoting anyway; these checks
exist so that nonsense is refused *early*, with a sentence saying what is acceptable, instead of failing
later somewhere less clear. Each function returns the cleaned value or raises :class:`InvalidInput`.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$", re.IGNORECASE)


class InvalidInput(ValueError):
    """The value cannot be used; the message says what would be accepted."""


def host(value: str) -> str:
    """A DNS name or an IPv4/IPv6 address (brackets around IPv6 are accepted and removed)."""
    text = (value or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.rstrip(".")
    if name and len(name) <= 253 and all(_LABEL.match(label) for label in name.split(".")):
        return name.lower()
    raise InvalidInput(
        "A host must be a DNS name (letters, digits, hyphens and dots, like db1.example.com) or an IP "
        "address. Spaces, quotes and other symbols are not allowed."
    )


def port(value: str | int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise InvalidInput("A port must be a whole number from 1 to 65535 (SSH usually listens on 22).")
    return number


def username(value: str) -> str:
    """A POSIX login name (what `useradd` accepts)."""
    text = (value or "").strip()
    if not _USER.match(text):
        raise InvalidInput(
            "A user name must start with a letter or underscore and contain only letters, digits, '_', '.' "
            "or '-' (at most 32 characters), like root or backup."
        )
    return text


def absolute_path(value: str) -> str:
    """An absolute path; any character but NUL is allowed (paths are passed as single arguments)."""
    text = value or ""
    if not text.startswith("/") or "\x00" in text:
        raise InvalidInput("A path must be absolute, starting with / (like /var/www).")
    if any(part == ".." for part in text.split("/")):
        raise InvalidInput("A path may not contain '..'; give the real absolute path.")
    return text if text == "/" else text.rstrip("/")
