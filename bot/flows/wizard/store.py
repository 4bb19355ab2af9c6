"""Wizard sessions in the database: created, loaded (only by their owner), saved with a version check.

The modal carries only the session id; everything else lives in the WizardSession row, saved after every
transition, so a restart of the bot loses nothing. ``version`` makes a stale writer (a double click, a
second bot process) fail instead of overwriting newer answers. Sessions expire after ``ttl`` of inactivity.

A save may still be on its way when the next read of the session comes (a caller that answers first and saves
after, ``submit(save_later=True)``; a background slow step): a load, and ``latest_open``, first wait for the saves
still running in this process, so a session is always read as last written, whatever the connection pool does.

A click costs one write and no read: the controller's :class:`SessionStore` keeps a copy of each session's last
save, the write is one compare-and-set UPDATE compiled once per kind of connection, and saves that arrive together
share one transaction (:class:`_GroupCommit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from bot.services.answers import checked
from storage.models import WizardSession
from storage.orm import in_transaction
from storage.tenancy import Tenant

if TYPE_CHECKING:
    from bot.flows.wizard.steps.base import WizardContext

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_TTL = timedelta(days=2)
CLOSED = ("done", "cancelled")


class StaleSession(Exception):
    """Someone saved this session in between; reload and try again."""


class SessionGone(Exception):
    """No open session with that id for this user (finished, cancelled, expired, or someone else's)."""


Schema = Callable[[Any], object]
"""Checks a session's answers before they are written (raises to refuse them): ``bot.services.answers.checked`` for
the real wizard; None for a machine of other steps (tests of the engine)."""


async def create(tenant: Tenant, user_id: str, channel_id: str | None, state: str, data: dict[str, Any], *,
                 ttl: timedelta = DEFAULT_TTL, schema: Schema | None = None) -> WizardSession:  # fmt: skip
    if schema is not None:
        schema(data)
    return await tenant.create(
        WizardSession, id=uuid.uuid4(), user_id=user_id, channel_id=channel_id, state=state, data=data,
        expires_at=datetime.now(UTC) + ttl,
    )  # fmt: skip


_saving: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[uuid.UUID, asyncio.Future[None]]] = (
    weakref.WeakKeyDictionary()
)


def _this_loops(registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T], make: Callable[[], T]) -> T:
    """The running event loop's entry of ``registry``, made on first use (futures and tasks belong to one loop)."""
    loop = asyncio.get_running_loop()
    found = registry.get(loop)
    if found is None:
        found = registry[loop] = make()
    return found


def _saves() -> dict[uuid.UUID, asyncio.Future[None]]:
    """The saves running now on this event loop, by session id."""
    return _this_loops(_saving, dict)


def _key(session_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(session_id))
    except ValueError:
        raise SessionGone("That wizard session id is not valid.") from None


async def _settled(key: uuid.UUID) -> None:
    running = _saves().get(key)
    if running is not None:  # read what that save writes, not what was there before it
        await asyncio.shield(running)


def _usable(row: WizardSession | None) -> WizardSession:
    if row is None or row.state in CLOSED:
        raise SessionGone("This wizard is finished or cancelled. Start a new one with `/backup new`.")
    if row.expires_at is not None and row.expires_at < datetime.now(UTC):
        raise SessionGone("This wizard expired after a long pause. Start a new one with `/backup new`.")
    return row


async def load(tenant: Tenant, session_id: str, user_id: str) -> WizardSession:
    """The open session ``session_id`` of this person, read from the database."""
    key = _key(session_id)
    await _settled(key)
    return _usable(await tenant.get_or_none(WizardSession, id=key, user_id=user_id))


async def save(row: WizardSession, *, ttl: timedelta = DEFAULT_TTL, schema: Schema | None = None) -> None:
    """Write state and data if nobody else saved since we loaded; bumps the version."""
    saves = _saves()
    before = saves.get(row.id)
    done = asyncio.get_running_loop().create_future()
    saves[row.id] = done
    try:
        if before is not None:  # two saves of one session: in the order they were asked for
            await asyncio.shield(before)
        await _write(row, ttl, schema)
    finally:
        done.set_result(None)
        if saves.get(row.id) is done:
            del saves[row.id]


async def _write(row: WizardSession, ttl: timedelta, schema: Schema | None) -> None:
    if schema is not None:
        schema(row.data)  # the declared shape (bot.services.answers.SessionData), or nothing is written
    now = datetime.now(UTC)
    expires = now + ttl
    values = {"state": row.state, "data": row.data, "view_id": row.view_id, "version": row.version + 1,
              "expires_at": expires, "updated_at": now}  # fmt: skip
    if await _commits().update(row.id, row.version, values) != 1:
        raise StaleSession("This wizard was changed in another window; it has been reloaded.")
    row.version += 1
    row.expires_at = expires
    row.updated_at = now


class _GroupCommit:
    """Session saves of one event loop, written together when they arrive together.

    Every save is a compare-and-set UPDATE that must be durable before its click is answered, and on SQLite each
    commit waits for the disk (fsync) on the one connection every query shares. When saves arrive while a commit is
    running, the next commit takes all of them in one transaction: one wait for the disk instead of one each, which
    is what keeps a burst of clicks from queueing behind each other. A lone save is a single UPDATE, as before.
    Each save still gets its own answer (1 row updated, or 0: someone saved that session first), and is only
    answered once its transaction committed; a failed transaction fails every save in it.
    """

    def __init__(self) -> None:
        self._waiting: list[tuple[uuid.UUID, int, dict[str, Any], asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def update(self, key: uuid.UUID, version: int, values: dict[str, Any]) -> int:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        self._waiting.append((key, version, values, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all())
        return await asyncio.shield(done)  # a cancelled caller stops waiting; its write still lands or fails

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                if len(batch) == 1:
                    counts = [await _cas(WizardSession._meta.db, *batch[0][:3])]
                else:
                    async with in_transaction(WizardSession._meta.default_connection) as conn:
                        counts = [await _cas(conn, key, version, values) for key, version, values, _ in batch]
            except Exception as exc:
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (*_, done), count in zip(batch, counts, strict=True):
                if not done.done():
                    done.set_result(count)


_committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupCommit] = weakref.WeakKeyDictionary()


def _commits() -> _GroupCommit:
    return _this_loops(_committers, _GroupCommit)


async def _cas(conn: Any, key: uuid.UUID, version: int, values: dict[str, Any]) -> int:
    """UPDATE the session ``key`` to ``values`` if it is still at ``version``; the number of rows updated."""
    statement = _statement(conn)
    if statement is not None:  # the same UPDATE Tortoise builds, without building it again for every click
        return (await conn.execute_query(statement, _db_values({**values, "id": key, "old": version})))[0]
    return await WizardSession.filter(id=key, version=version).using_db(conn).update(**values)


# -- the compare-and-set UPDATE, compiled once per kind of connection ---------------------------------------------

_SET = ("state", "data", "view_id", "version", "expires_at", "updated_at")
_WHERE = ("id", "old")  # the row, and the version it was read at
_compiled: dict[type, str | None] = {}


def _db_values(values: dict[str, Any]) -> list[Any]:
    """Parameters in statement order, converted as Tortoise converts them for this UPDATE."""
    fields = WizardSession._meta.fields_map
    return [fields["version" if key == "old" else key].to_db_value(values[key], None) for key in (*_SET, *_WHERE)]


def _statement(conn: Any) -> str | None:
    """The SQL of ``filter(id=…, version=…).update(…)`` for this connection's dialect, or None to use the ORM.

    Building a query costs Tortoise about half a millisecond of CPU, more than the UPDATE itself, and a click
    saves once. The statement is built once by Tortoise with marker values and kept only if its parameters are
    exactly the markers in the expected order (so a Tortoise release that builds it differently falls back to the
    ORM instead of writing wrong columns); the database and its driver then see what Tortoise would have sent.
    """
    kind = type(conn)
    if kind not in _compiled:
        _compiled[kind] = _compile(conn)
    return _compiled[kind]


def _compile(conn: Any) -> str | None:
    marks: dict[str, Any] = {
        "state": "\x01state", "data": {"\x01": "data"}, "view_id": "\x01view", "version": 1_000_001,
        "expires_at": datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC), "id": uuid.UUID(int=0x1234), "old": 1_000_000,
        "updated_at": datetime(2002, 3, 4, 5, 6, 7, tzinfo=UTC),
    }  # fmt: skip
    try:
        query = WizardSession.filter(id=marks["id"], version=marks["old"]).using_db(conn)
        update = query.update(**{key: marks[key] for key in _SET})
        update._make_query()
        sql, params = update.query.get_parameterized_sql()
    except Exception:  # a Tortoise without these internals: the ORM path still works
        log.warning("wizard saves use the ORM path (could not precompile the UPDATE)", exc_info=True)
        return None
    if list(params) != _db_values(marks):
        log.warning("wizard saves use the ORM path (unexpected UPDATE parameters from Tortoise)")
        return None
    return sql


async def latest_open(tenant: Tenant, user_id: str) -> WizardSession | None:
    running = list(_saves().values())
    if running:  # any of them may be this person's
        await asyncio.shield(asyncio.gather(*running))
    now = datetime.now(UTC)
    return (
        await tenant.query(WizardSession)
        .filter(user_id=user_id, expires_at__gt=now)
        .exclude(state__in=CLOSED)
        .order_by("-updated_at")
        .first()
    )


async def expired_open(now: datetime | None = None) -> list[WizardSession]:
    """Open sessions past their expiry (across workspaces: the periodic clean-up is the bot's own job)."""
    moment = now or datetime.now(UTC)
    return await WizardSession.filter(expires_at__lt=moment).exclude(state__in=CLOSED)


async def keep_data(ctx: WizardContext) -> None:
    """Write ``ctx.data`` to the session row now, in the middle of a step.

    The controller saves the session only after an accepted or refused submit and after ``act``. A step that
    created something the person must not lose even if the step then fails (the fetched host key awaiting
    confirmation, a credential saved at once, a repository and its secrets created on the pool) writes it at once.
    The version is not bumped, so the controller's own save of the same row that follows still succeeds (and a
    call that fails instead makes the controller forget its copy: see :class:`SessionStore`). Without a session row
    (steps driven directly, as in tests) nothing happens.
    """
    try:
        key = uuid.UUID(str(ctx.session_id))
    except ValueError:
        return
    await WizardSession.filter(id=key, team_id=ctx.team_id, user_id=ctx.user_id).update(data=ctx.data)


# -- one controller's sessions ---------------------------------------------------------------------------------


_PLAIN = ("team_id", "user_id", "channel_id", "state", "view_id", "version", "expires_at", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class _Copy:
    """A session as this store last saved it (data as JSON, so every load gets its own objects)."""

    team_id: str
    user_id: str
    channel_id: str | None
    state: str
    data: str
    view_id: str | None
    version: int
    expires_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None

    def row(self, key: uuid.UUID) -> WizardSession:
        return WizardSession(id=key, data=json.loads(self.data), **{name: getattr(self, name) for name in _PLAIN})


class SessionStore:
    """The sessions of one wizard controller: their time to live, and a memory of the ones it saved.

    A click reads its session, moves it and saves it. The store remembers each open session as it last saved it
    (after the write succeeded), and a click may start from that copy instead of reading the database
    (``load(remembered=True)``): the read costs more CPU than the rest of a fast step. The copy can only be out of
    date when something else wrote the row (another bot process, a save that bypassed this store); every save bumps
    the version, so the next save from a stale copy is refused by the version check, the copy is dropped, and the
    person sees "changed in another window" (as with two windows) and goes on from the database. A step's own
    write that keeps the version (:func:`keep_data`) happens inside a call that then saves or fails, and
    the controller forgets the session of a call that fails. Reads that change nothing (show, resume, options) go
    to the database. A restarted bot starts with an empty memory.
    """

    def __init__(self, ttl: timedelta = DEFAULT_TTL, *, remember: int = 2000, schema: Schema | None = checked) -> None:
        self.ttl = ttl
        self.schema = schema
        self.remember = remember
        self._copies: OrderedDict[uuid.UUID, _Copy] = OrderedDict()

    async def create(self, tenant: Tenant, user_id: str, channel_id: str | None, state: str,
                     data: dict[str, Any]) -> WizardSession:  # fmt: skip
        row = await create(tenant, user_id, channel_id, state, data, ttl=self.ttl, schema=self.schema)
        self._keep(row)
        return row

    async def load(self, tenant: Tenant, session_id: str, user_id: str, *, remembered: bool = False) -> WizardSession:
        key = _key(session_id)
        copy = self._copies.get(key) if remembered else None
        if copy is None:
            row = await load(tenant, session_id, user_id)
            self._keep(row)
            return row
        await _settled(key)
        copy = self._copies.get(key)  # a save that was running may have replaced (or dropped) it
        if copy is None:
            return await self.load(tenant, session_id, user_id)
        if copy.team_id != tenant.team_id or copy.user_id != user_id:
            return _usable(None)  # someone else's session: as if it did not exist
        self._copies.move_to_end(key)
        return _usable(copy.row(key))

    async def save(self, row: WizardSession) -> None:
        """:func:`save` with this store's time to live; the copy follows the database, or is dropped."""
        try:
            await save(row, ttl=self.ttl, schema=self.schema)
        except BaseException:
            self.forget(row.id)
            raise
        self._keep(row)

    def forget(self, session_id: uuid.UUID | str) -> None:
        try:
            self._copies.pop(uuid.UUID(str(session_id)), None)
        except ValueError:
            pass

    def _keep(self, row: WizardSession) -> None:
        if row.state in CLOSED:
            self._copies.pop(row.id, None)
            return
        self._copies[row.id] = _Copy(data=json.dumps(row.data), **{name: getattr(row, name) for name in _PLAIN})
        self._copies.move_to_end(row.id)
        while len(self._copies) > self.remember:
            self._copies.popitem(last=False)
