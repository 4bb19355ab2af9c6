"""``/backup drill <chain> weekly|monthly|off [on <server>]``: scheduled restore tests (:mod:`bot.services.drills`).

Without a value it shows the chain's drill setting and its last drill. Parsing and rendering only; the service
layer decides and audits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.access import Actor, Forbidden, Refused
from bot.services import drills
from bot.slack.listing import Answer, _esc, _section

WORDS = ("weekly", "monthly", "off")
USAGE = ("`/backup drill <chain>` shows it; `/backup drill <chain> weekly` (or `monthly`: the first Sunday) restores "
         "its newest archives into a scratch place on its pool's host at 06:00, checks and removes them; add "
         "`on <server>` to drill on one of its source servers; `/backup drill <chain> off`.")  # fmt: skip


def split(rest: str) -> tuple[str, str | None, str | None]:
    """``"<chain name> [weekly|monthly|off] [on <server>]"`` → (chain name, the word or None, server or None).
    Chain names may contain spaces; a server name is one word."""
    tokens = rest.strip().split()
    server = None
    if len(tokens) >= 3 and tokens[-2].lower() == "on":
        server, tokens = tokens[-1].strip("`\"'"), tokens[:-2]
    word = None
    if len(tokens) >= 2 and tokens[-1].lower() in WORDS:
        word, tokens = tokens[-1].lower(), tokens[:-1]
    elif server is not None:  # "on <server>" without weekly/monthly: it belonged to the name
        tokens, server = [*tokens, "on", server], None
    return " ".join(tokens).strip("`\"'"), word, server


def _answer(text: str) -> Answer:
    return Answer(text, [_section(text)])


async def drill_answer(actor: Actor, rest: str) -> Answer:
    """Given the command's text, show or change the chain's restore drill."""
    name, word, server = split(rest)
    if not name:
        return _answer(f"Which chain? {USAGE}")
    try:
        if word is None:
            chain, summary, last = await drills.describe(actor, name)
            return _answer(f"*{_esc(chain.name)}*: {_esc(summary)}. {_esc(drills.last_result(last))}\n{USAGE}")
        done = await drills.set_drill(actor, name, word, server)  # type: ignore[arg-type]
    except Forbidden as exc:
        return _answer(f":no_entry: {exc.sentence}")
    except Refused as exc:
        return _answer(f"{exc.sentence} {USAGE}")
    return _answer(done.sentence)


ANSWERS: dict[str, Callable[[Actor, str], Awaitable[Answer]]] = {"drill": drill_answer}
