"""``backup-bot server …``: (being built) the workspace's servers from the command line."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot server`` (nothing yet)."""
