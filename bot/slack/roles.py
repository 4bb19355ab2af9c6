"""``/backup roles``: show the workspace's roles, and (admins) change them.

* ``/backup roles`` — admins see every grant; anyone else sees their own and who the admins are;
* ``/backup roles admin @ana`` / ``/backup roles admin @ops-leads`` — give the admin role;
* ``/backup roles grant @otto|@ops|everyone server web-1 [paths /srv/app,/etc] [databases shop,crm]``;
* ``/backup roles grant @otto pool main`` — an operator of a server (with optional limits) or of a pool;
* ``/backup roles revoke 12`` — remove grant #12;
* ``/backup roles channel #ops-admins`` (or ``off``) — where admins are told of host key pins.

Parsing only; :mod:`bot.services.roles` decides and audits.
"""

from __future__ import annotations

from bot.access import Actor, Refused
from bot.access.authz import mention, who_can_allow
from bot.services import roles
from bot.slack.listing import Answer, _esc, _section

WORDS = ("roles",)
USAGE = (
    "`/backup roles` shows them; admins change them: `/backup roles admin @user|@group`, "
    "`/backup roles grant @user|@group|everyone server <name> [paths /a,/b] [databases x,y]`, "
    "`/backup roles grant @user pool <name>`, `/backup roles revoke <#>`, `/backup roles channel #channel|off`."
)


def _answer(text: str) -> Answer:
    return Answer(text[:3000], [_section(text[:2900])])


def _line(grant: roles.GrantView) -> str:
    what = "admin" if grant.role == "admin" else f"operator of {_esc(grant.target)} ({_esc(grant.limits)})"
    return f"`#{grant.id}` {mention(grant.subject)} — {what}"


async def _show(actor: Actor) -> Answer:
    found = await roles.show(actor)
    lines = [_line(g) for g in found.grants[:60]]
    if found.everything:
        where = f"<#{found.admin_channel}>" if found.admin_channel else "a DM to each admin user named here"
        head = "*Roles in this workspace* (Slack admins and owners are admins too):"
        tail = f"\nAdmin notices (host key pins) go to {where}.\n{USAGE}"
    else:
        head = "*Your roles here*:"
        tail = f"\nTo use more servers or pools, {await who_can_allow(actor.team_id)}."
    body = "\n".join(lines) if lines else "_none_"
    return _answer(f"{head}\n{body}{tail}")


LIMIT_WORDS = {"paths": "paths", "path": "paths", "databases": "databases", "database": "databases",
               "dbs": "databases"}


def _limits(words: list[str]) -> tuple[list[str], list[str]]:
    """``paths /a,/b databases x,y`` → (paths, databases)."""
    found: dict[str, list[str]] = {"paths": [], "databases": []}
    current: list[str] | None = None
    for word in words:
        if word.lower() in LIMIT_WORDS:
            current = found[LIMIT_WORDS[word.lower()]]
        elif current is None:
            raise Refused(f"I don't understand {word[:40]!r}. {USAGE}")
        else:
            current += [v for v in word.split(",") if v]
    return found["paths"], found["databases"]


async def _grant(actor: Actor, words: list[str]) -> Answer:
    if len(words) < 3 or words[1].lower() not in ("server", "pool"):
        raise Refused(f"Say whom and what to grant. {USAGE}")
    subject, kind, rest = words[0], words[1].lower(), words[2:]
    cut = next((i for i, w in enumerate(rest) if w.lower() in LIMIT_WORDS), len(rest))
    name = " ".join(rest[:cut])  # server and pool names may contain spaces
    if not name:
        raise Refused(f"Name the {kind} to grant. {USAGE}")
    paths, databases = _limits(rest[cut:])
    grant = await roles.grant_operator(actor, subject, server=name if kind == "server" else None,
                                       pool=name if kind == "pool" else None, paths=paths,
                                       databases=databases)  # fmt: skip
    return _answer(f":white_check_mark: Granted: {_line(grant)}.")


async def roles_answer(actor: Actor, rest: str) -> Answer:
    """The answer to ``/backup roles <rest>``."""
    words = rest.split()
    action = words[0].lower() if words else ""
    try:
        if not action:
            return await _show(actor)
        if action == "admin" and len(words) == 2:
            grant = await roles.grant_admin(actor, words[1])
            return _answer(f":white_check_mark: {_line(grant)}.")
        if action == "grant":
            return await _grant(actor, words[1:])
        if action == "revoke" and len(words) == 2:
            grant = await roles.revoke(actor, words[1])
            return _answer(f"Revoked: {_line(grant)}.")
        if action == "channel" and len(words) == 2:
            channel = await roles.set_admin_channel(actor, None if words[1].lower() in ("off", "none") else words[1])
            return _answer(f"Admin notices now go to {f'<#{channel}>' if channel else 'a DM to each admin user'}.")
    except Refused as exc:
        return _answer(f":no_entry: {exc.sentence} Nothing was changed.")
    return _answer(f"I don't understand `/backup roles {_esc(rest[:60])}`. {USAGE}")


ANSWERS = {"roles": roles_answer}
