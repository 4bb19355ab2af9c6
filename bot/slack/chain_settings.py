"""Chain settings from Slack: ``/backup ping``, ``/backup check`` and ``/backup prune``.

* ``/backup ping <chain> [<url> | off]``: a healthchecks-style URL pinged at each backup's start, success, failure.
* ``/backup check <chain> [off | <days> <HH:MM> [verify]]``: when ``borg check`` verifies the repository.
* ``/backup prune <chain> [after-backup | <days> <HH:MM>]``: prune + compact after each backup, or on a schedule
  (e.g. a busy repository pruned once a week instead of after every hourly backup).

Without a value each shows the current setting.

Monitoring outside Slack (healthchecks.io, a self-hosted Healthchecks, Uptime Kuma's push monitors) is what tells
someone a backup did not happen when the bot itself is down, so setting it must not need a shell on the bot host.
The URL's path is the check's secret (anyone with it can report success), so answers and the audit log name the
host only. The changes are operations of the service layer (:mod:`bot.services.chains`), which decides who may make
them: the same people who may run or pause the chain (its creator, the operators of its servers, admins).
"""

from __future__ import annotations

from bot.access import Actor, Forbidden, Refused
from bot.backup import schedule as sched
from bot.monitoring import ping_url_of
from bot.runs import maintenance
from bot.services import chains
from bot.slack import listing
from storage.models import BackupChain, Repository

WORDS = ("ping", "check", "prune")
OFF = ("off", "none", "remove", "clear")
USAGE = "`/backup ping <chain>` shows it, `/backup ping <chain> <https://…>` sets it, `/backup ping <chain> off`."


def _unwrap(word: str) -> str:
    """Slack sends links in command text as ``<https://…>`` or ``<https://…|label>`` when it escapes links."""
    if word.startswith("<") and word.endswith(">"):
        word = word[1:-1].split("|", 1)[0]
    return word


def split_arguments(rest: str) -> tuple[str, str | None]:
    """``"<chain name> <url|off>"`` → (chain name, argument or None). Chain names may contain spaces."""
    words = rest.strip().split()
    if len(words) >= 2:
        last = _unwrap(words[-1])
        if "://" in last or last.lower() in OFF:
            return " ".join(words[:-1]).strip("`\"'"), last
    return rest.strip().strip("`\"'"), None


def _answer(text: str) -> listing.Answer:
    return listing.Answer(text, [listing._section(text)])


async def ping_answer(actor: Actor, rest: str) -> listing.Answer:
    name, argument = split_arguments(rest)
    chain = await _chain_named(actor, name, USAGE)
    if isinstance(chain, listing.Answer):
        return chain
    label = f"*{listing._esc(chain.name)}*"
    if argument is None:
        url = await ping_url_of(actor.team_id, chain.id)
        if url is None:
            return _answer(f"{label} has no ping URL. {USAGE}")
        return _answer(f"{label} pings `{listing._esc(chains.url_host(url))}` at start, success and failure "
                       "(the URL's path is not shown: it is the check's secret).")  # fmt: skip
    url = None if argument.lower() in OFF else argument
    try:
        await chains.set_ping(actor, chain.id, url)
    except Refused as exc:
        return _refused(exc, USAGE)
    if url is None:
        return _answer(f"{label} no longer pings anything.")
    host = listing._esc(chains.url_host(url))
    return _answer(f":white_check_mark: {label} now pings `{host}`: `/start` when a backup "
                   "starts, the URL itself on success, `/fail` on failure.")  # fmt: skip


def _refused(exc: Refused, usage: str) -> listing.Answer:
    """A refusal from the service layer: its sentence (it says nothing was changed) and, for bad values, the usage."""
    if isinstance(exc, Forbidden):
        return _answer(f":no_entry: {exc.sentence}")
    return _answer(f"{exc.sentence} {usage}")


CHECK_USAGE = (
    "`/backup check <chain>` shows it; `/backup check <chain> sun 05:00` (days: mon…sun, comma-separated, or daily) "
    "sets it, add `verify` to also read every chunk (slow); `/backup check <chain> off`."
)
PRUNE_USAGE = (
    "`/backup prune <chain>` shows it; `/backup prune <chain> sat 03:00` prunes on a schedule; "
    "`/backup prune <chain> after-backup` prunes after each backup again."
)


def _days_like(token: str) -> bool:
    words = token.lower().split(",")
    return token.lower() in ("daily", "every-day") or all(sched._day(w) is not None for w in words)


def split_timing(rest: str, *, flags: tuple[str, ...] = (), words: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """``"<chain name> <days> <HH:MM> [flag]"`` or ``"<chain name> <word>"`` → (name, the value's tokens)."""
    tokens = rest.strip().split()
    tail: list[str] = []
    if tokens and tokens[-1].lower() in flags:
        tail.insert(0, tokens.pop().lower())
    if len(tokens) >= 3 and (":" in tokens[-1] or _days_like(tokens[-2])):
        tail[:0] = [tokens[-2], tokens[-1]]
        tokens = tokens[:-2]
    elif len(tokens) >= 2 and tokens[-1].lower() in words and not tail:
        tail = [tokens.pop().lower()]
    elif tail:  # a flag without a time: it belonged to the name
        tokens.append(tail.pop())
    return " ".join(tokens).strip("`\"'"), tuple(tail)


async def _chain_named(actor: Actor, name: str, usage: str) -> BackupChain | listing.Answer:
    """The actor's workspace's chain called ``name``, or the answer that says it is missing."""
    if not name:
        return _answer(f"Which chain? {usage}")
    chain = await actor.tenant.query(BackupChain).filter(name=name).first()
    return listing._not_found(name) if chain is None else chain


async def check_answer(actor: Actor, rest: str) -> listing.Answer:
    name, value = split_timing(rest, flags=("verify", "verify-data"), words=OFF)
    chain = await _chain_named(actor, name, CHECK_USAGE)
    if isinstance(chain, listing.Answer):
        return chain
    label = f"*{listing._esc(chain.name)}*"
    if value:
        try:
            check = None if value[0] in OFF else {
                **maintenance.timing(value[0], value[1], chain.timezone), "verify_data": len(value) == 3
            }  # fmt: skip
        except maintenance.MaintenanceError as exc:
            return _answer(f"{exc} Nothing was changed. {CHECK_USAGE}")
        try:
            chain = await chains.set_check(actor, chain.id, check)
        except Refused as exc:
            return _refused(exc, CHECK_USAGE)
        if check is None:
            return _answer(f"{label} has no scheduled integrity check any more. Its backups are still verified "
                           "as listed in the repository after each run.")  # fmt: skip
        return _answer(f":white_check_mark: {label} is checked {listing._esc(maintenance.check_summary(chain))}; "
                       "problems are reported in its channel.")  # fmt: skip
    return _answer(f"{label}: {listing._esc(maintenance.check_summary(chain))}. {CHECK_USAGE}")


async def prune_answer(actor: Actor, rest: str) -> listing.Answer:
    name, value = split_timing(rest, words=("after-backup",))
    chain = await _chain_named(actor, name, PRUNE_USAGE)
    if isinstance(chain, listing.Answer):
        return chain
    repository = await actor.tenant.get(Repository, id=chain.repository_id)  # type: ignore[attr-defined]
    if value:
        try:
            prune = None if value[0] == "after-backup" else maintenance.timing(value[0], value[1], chain.timezone)
        except maintenance.MaintenanceError as exc:
            return _answer(f"{exc} Nothing was changed. {PRUNE_USAGE}")
        try:
            chain, repository = await chains.set_prune(actor, chain.id, prune)
        except Refused as exc:
            return _refused(exc, PRUNE_USAGE)
        return _answer(f":white_check_mark: The repository *{listing._esc(repository.name)}* is pruned and "
                       f"compacted {listing._esc(maintenance.prune_summary(repository, chain.timezone))}, keeping "
                       "what its retention says; prunes are reported in the channel.")  # fmt: skip
    when = maintenance.prune_summary(repository, chain.timezone)
    return _answer(f"The repository *{listing._esc(repository.name)}* of *{listing._esc(chain.name)}* is pruned "
                   f"{listing._esc(when)}. {PRUNE_USAGE}")  # fmt: skip


ANSWERS = {"ping": ping_answer, "check": check_answer, "prune": prune_answer}
