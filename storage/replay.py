"""Replayed requests: each signed Slack request (or retried event) has an effect once, across processes.

Slack signs a request with a timestamp and accepts it for five minutes; whoever captures one could send it again
within that window, and Slack itself resends an event it thinks was not received (``x-slack-retry-num``). A request
is named by what cannot change between its copies — its signature, its ``trigger_id``, its ``event_id`` — and each
name is inserted into :class:`~storage.models.SeenRequest` (primary key) before anything else happens. The insert
is the test: the database refuses a second row with the same key, whichever process tries, so two copies arriving
at once in two bot processes still give exactly one "first". Rows older than :data:`KEEP` are removed: by then
Slack's window has closed and a copy would be refused for its timestamp anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from tortoise.exceptions import IntegrityError

from storage.models import SeenRequest

KEEP = timedelta(minutes=10)  # Slack's replay window is 5 minutes; twice that, for clocks that drift


def request_key(kind: str, value: str) -> str:
    """Given what names a request (``"sig"``, ``"trigger"``, ``"event"``) and its value, the 64-character key
    stored (a hash: the table holds no Slack identifiers, and any value fits the column)."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


async def first_sighting(keys: Iterable[str], now: datetime | None = None) -> bool:
    """Given a request's keys, record them and return True if none was seen before; False for a copy.

    Stops at the first key already present (a copy); keys recorded before it stay recorded, which is harmless:
    they belong to a copy, whose every later copy is refused as well."""
    stamp = now or datetime.now(UTC)
    for key in dict.fromkeys(keys):  # unique, in order
        try:
            await SeenRequest.create(key=key, seen_at=stamp)
        except IntegrityError:
            return False
    return True


async def forget_older(now: datetime | None = None, keep: timedelta = KEEP) -> int:
    """Remove the keys of requests older than ``keep``: Slack refuses their copies by timestamp by now."""
    return await SeenRequest.filter(seen_at__lt=(now or datetime.now(UTC)) - keep).delete()
