"""``backup-bot playground``: (being built) the whole bot against the bundled Slack emulator, in a browser."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot playground`` (nothing yet)."""
