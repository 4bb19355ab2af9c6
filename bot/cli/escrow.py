"""``backup-bot escrow export|import``: (being built) the bot's recovery bundle."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``backup-bot escrow`` (nothing yet)."""
