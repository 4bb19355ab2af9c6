"""What an operation raises when it will not act: one human sentence, safe to show on any surface."""

from __future__ import annotations


class Refused(Exception):
    """The actor may not do this (or it cannot be done now); ``sentence`` says what and who can allow it.

    Nothing was changed when this is raised: every check comes before the first effect.
    """

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


class NotFound(Refused):
    """The object does not exist in the actor's workspace (rows of other workspaces look exactly like this)."""


class Forbidden(Refused):
    """The actor's roles do not allow this; the sentence names who can allow it (an HTTP surface answers 403)."""
