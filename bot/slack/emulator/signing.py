"""Slack's request signing, done the way Slack does it, so the app's verifier is exercised for real.

Slack signs every HTTP request it sends to an app: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{raw body}``
keyed with the app's signing secret, sent in ``X-Slack-Signature`` next to ``X-Slack-Request-Timestamp``.
The driver uses these functions, and tests use them directly to forge a request with a wrong signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_VERSION = "v0"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"


def signature(secret: str, timestamp: int | str, body: bytes | str) -> str:
    """Return the ``X-Slack-Signature`` value for ``body`` sent at ``timestamp``."""
    raw = body.encode() if isinstance(body, str) else body
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + raw
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str, body: bytes | str, *, timestamp: int | None = None) -> dict[str, str]:
    """Both signing headers for ``body``; ``timestamp`` defaults to now (the app rejects > 5 minutes skew)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, ts, body)}


def verify(secret: str, timestamp: str, body: bytes | str, given: str, *, max_age: int = 300) -> bool:
    """Check a signature as a receiver would (used by the playground and by tests of this module)."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    if age > max_age:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), given)
