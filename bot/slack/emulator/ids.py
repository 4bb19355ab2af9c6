"""Identifier factories producing values shaped like Slack's (``V…`` views, ``ts`` strings, trigger ids).

Ids are sequential where Slack's look opaque, so test output stays readable, but they keep Slack's prefixes and
formats because apps sometimes branch on them (``D…`` for DMs, ``U…`` users, dotted ``ts``).
"""

from __future__ import annotations

import itertools
import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


class IdFactory:
    """Hands out unique ids per prefix, message timestamps and opaque short ids."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}  # prefix -> last number handed out (kept in a playground's snapshot)
        self._ts_seq = itertools.count(1)
        self._last_ts = 0.0

    def next(self, prefix: str, width: int = 8) -> str:
        """``prefix`` + an upper-case sequential number, e.g. ``V00000001``."""
        self.counters[prefix] = number = self.counters.get(prefix, 0) + 1
        return f"{prefix}{number:0{width}d}"

    def ts(self) -> str:
        """A message ``ts``: seconds.micro-ish, strictly increasing like Slack's."""
        now = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"

    def trigger_id(self, team_id: str) -> str:
        """Shaped like ``12345.98765.abcd2358fdea``."""
        seq = next(self._ts_seq)
        return f"{seq}.{abs(hash(team_id)) % 10**10}.{secrets.token_hex(16)}"

    def view_hash(self) -> str:
        """Shaped like ``1569262015.55b5e41b``."""
        return f"{int(time.time())}.{secrets.token_hex(4)}"

    @staticmethod
    def short() -> str:
        """An opaque 5-character id, as Slack generates for a missing block_id/action_id."""
        return "".join(secrets.choice(_ALPHABET) for _ in range(5))

    @staticmethod
    def token() -> str:
        """An unguessable token for upload URLs, socket tickets and response URLs."""
        return secrets.token_urlsafe(18)
