"""``/backup audit``: the audit log in Slack, newest first, a page at a time.

* ``/backup audit`` — everything the caller may see (admins: the whole workspace; anyone else: the chains and
  servers they may operate);
* ``/backup audit chain &lt;name&gt;`` / ``server <name>`` / ``user @someone`` — narrowed to one of them;
* ``… page N`` — an older page.

Parsing and rendering only; :mod:`bot.services.audit` decides what the caller may read.
"""

from __future__ import annotations

from datetime import UTC

from bot.access import Actor, Refused
from bot.access.actor import USER_ID
from bot.services import audit
from bot.slack import listing
from bot.slack.listing import _esc, _section

WORDS = ("audit",)
FILTERS = ("chain", "server", "user")
PAGE_SIZE = 15  # entries per answer: one section each, well under the 50-block message limit
USAGE = (
    "`/backup audit` shows what you may see of the audit log; narrow it with `/backup audit chain &lt;name&gt;`, "
    "`/backup audit server &lt;name&gt;` or `/backup audit user @someone`, and add `page N` for older entries."
)


def _answer(text: str) -> listing.Answer:
    return listing.Answer(text[:3000], [_section(text[:2900])])


def _who(actor: str) -> str:
    return f"<@{actor}>" if USER_ID.match(actor) else f"`{_esc(actor)}`"


def _line(entry: audit.Entry) -> str:
    target = f"{_esc(entry.object_type)} {_esc(entry.object_id or '')}".strip()
    if entry.object_name:
        target += f" *{_esc(entry.object_name)}*"
    when = entry.when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    text = f"`{when}Z` {_who(entry.actor)} `{_esc(entry.action)}` {target}"
    if entry.change:
        text += f" — {_esc(entry.change)}"
    if entry.outcome:
        text += f" _({_esc(entry.outcome)})_"
    return text


def parse(rest: str) -> tuple[str | None, str | None, int]:
    """``"[chain|server|user <value>] [page N]"`` → (filter word, its value, page counted from 1); a
    :class:`Refused` carries the usage."""
    words = rest.split()
    page = 1
    if len(words) >= 2 and words[-2].lower() == "page":
        if not words[-1].isdigit() or int(words[-1]) < 1:
            raise Refused(f"{words[-1][:20]!r} is not a page number. {USAGE}")
        page, words = int(words[-1]), words[:-2]
    if not words:
        return None, None, page
    kind = words[0].lower()
    if kind not in FILTERS or len(words) < 2:
        raise Refused(f"I don't understand `/backup audit {_esc(rest[:60])}`. {USAGE}")
    return kind, " ".join(words[1:]), page  # chain and server names may contain spaces


async def audit_answer(actor: Actor, rest: str) -> listing.Answer:
    """The answer to ``/backup audit <rest>``."""
    try:
        kind, value, page = parse(rest)
    except Refused as exc:
        return _answer(exc.sentence)
    try:
        found = await audit.entries(actor, page=page - 1, page_size=PAGE_SIZE,
                                    **({kind: value} if kind else {}))  # fmt: skip
    except Refused as exc:
        return _answer(f":no_entry: {exc.sentence}")
    if kind == "user":
        value = audit.user_of(value or "")  # the bare id: `user U…` is what to type for the next page
    about = f" — what {_who(value or '')} did" if kind == "user" else f" — {kind} *{_esc(value)}*" if kind else ""
    scope = "" if found.everything else " (only the chains and servers you may operate)"
    head = f"*Audit log*{about}{scope}, newest first:"
    blocks = [_section(head)]
    blocks += [_section(_line(e)) for e in found.entries]
    if not found.entries:
        blocks.append(_section("_No entries._" if found.total == 0 else
                               f"_There is no page {page}; there are {found.pages}._"))  # fmt: skip
    footer = (
        f"Page {found.page + 1} of {found.pages} ({found.counted})."
        if found.page < found.pages
        else f"{found.counted} on {found.pages} page{'s' if found.pages > 1 else ''}."
    )
    if found.has_next:
        ask = " ".join(p for p in ("/backup audit", kind or "", _esc(value or ""), f"page {page + 1}") if p)
        footer += f" Older entries: `{ask}`."
    blocks.append(listing._context(footer))
    lines = [head, *(_line(e) for e in found.entries), footer]
    return listing.Answer("\n".join(lines)[:3000], blocks[: listing.MAX_BLOCKS])


ANSWERS = {"audit": audit_answer}
