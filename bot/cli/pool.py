"""``backup-bot pool …``: (being built) the workspace's pools from the command line."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot pool`` (nothing yet)."""
