"""Slack mrkdwn escaping for text that people or servers wrote (names, paths, reasons, errors), so that it can never
become a mention, a link or markup. Used by the Slack layer and by the service layer's sentences, which are mrkdwn."""

from __future__ import annotations


def esc(text: object) -> str:
    """Given any text, return it with ``&``, ``<`` and ``>`` escaped as Slack requires."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
