"""The wizard's session store on a real database: the copy a controller remembers of its last save, what makes it
forget that copy, the configured time to live on every save, and the compiled compare-and-set UPDATE on SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.flows.wizard import store
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, StepView, WizardContext
from storage.models import WizardSession
from storage.tenancy import Tenant

TENANT = Tenant("T0001")


class Ask(BaseStep):
    """Asks one value; ``boom`` as the answer writes part of the session (as a step's keep_data does) and fails."""

    async def view(self, ctx: WizardContext) -> StepView:
        return StepView(heading=self.name, fields=(Field(self.name, self.name, "text"),))

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        if values.get(self.name) == "boom":
            ctx.data["written_before_failing"] = True
            await store.keep_data(ctx)
            raise RuntimeError("the step failed after writing part of the session")
        ctx.data[self.name] = values.get(self.name)
        return {}


def steps() -> list[Ask]:
    return [Ask(name=n, title=n.title()) for n in ("one", "two", "three", "four")]


@pytest.fixture
def controller() -> WizardController:
    return WizardController(steps, services=None, schema=None)


async def _row(session_id: str) -> WizardSession:
    return await WizardSession.get(id=session_id)


async def test_a_click_after_another_process_saved_is_refused_then_goes_on_from_the_database(sqlite_db) -> None:
    # two bot processes, one database
    here, there = WizardController(steps, None, schema=None), WizardController(steps, None, schema=None)
    start = await here.start(TENANT, "U1", "C1")
    await here.submit(TENANT, "U1", start.session_id, {"one": "here"})  # remembered by `here` at version 1
    moved = await there.submit(TENANT, "U1", start.session_id, {"two": "there"})
    assert moved.step == "three"
    with pytest.raises(store.StaleSession, match="changed in another window"):
        await here.submit(TENANT, "U1", start.session_id, {"two": "stale"})  # from the stale copy: refused
    screen = await here.submit(TENANT, "U1", start.session_id, {"three": "here again"})  # read from the database
    assert screen.step == "four"
    row = await _row(start.session_id)
    assert (row.data["one"], row.data["two"], row.data["three"], row.version) == ("here", "there", "here again", 3)


async def test_a_failed_click_forgets_the_copy_so_what_the_step_wrote_is_kept(sqlite_db, controller) -> None:
    start = await controller.start(TENANT, "U1", "C1")
    await controller.submit(TENANT, "U1", start.session_id, {"one": "x"})
    with pytest.raises(RuntimeError):
        await controller.submit(TENANT, "U1", start.session_id, {"two": "boom"})
    assert (await _row(start.session_id)).data["written_before_failing"] is True
    await controller.submit(TENANT, "U1", start.session_id, {"two": "y"})  # must not save over that write
    row = await _row(start.session_id)
    assert (row.state, row.data["two"], row.data["written_before_failing"]) == ("three", "y", True)


async def test_a_remembered_session_is_still_only_its_owners(sqlite_db, controller) -> None:
    start = await controller.start(TENANT, "U1", "C1")
    await controller.submit(TENANT, "U1", start.session_id, {"one": "x"})
    for tenant, user in ((TENANT, "U2"), (Tenant("T0002"), "U1")):
        with pytest.raises(store.SessionGone):
            await controller.submit(tenant, user, start.session_id, {"two": "theirs"})
        with pytest.raises(store.SessionGone):
            await controller.back(tenant, user, start.session_id)
    assert (await _row(start.session_id)).state == "two"


async def test_every_save_uses_the_configured_time_to_live(sqlite_db) -> None:
    controller = WizardController(steps, None, schema=None, ttl=timedelta(hours=3))
    start = await controller.start(TENANT, "U1", "C1")
    await controller.submit(TENANT, "U1", start.session_id, {"one": "x"})
    await controller.back(TENANT, "U1", start.session_id)
    left = (await _row(start.session_id)).expires_at - datetime.now(UTC)
    assert timedelta(hours=2, minutes=59) < left <= timedelta(hours=3)


async def test_a_remembered_session_expires_too(sqlite_db) -> None:
    controller = WizardController(steps, None, schema=None, ttl=timedelta(milliseconds=200))
    start = await controller.start(TENANT, "U1", "C1")
    await asyncio.sleep(0.3)
    with pytest.raises(store.SessionGone, match="expired"):
        await controller.submit(TENANT, "U1", start.session_id, {"one": "late"})
    assert (await _row(start.session_id)).state == "one"


async def test_resume_reopens_the_session_used_last(sqlite_db, controller) -> None:
    first = await controller.start(TENANT, "U1", "C1")
    await controller.start(TENANT, "U1", "C1")  # created later, not touched since
    await asyncio.sleep(0.01)
    await controller.submit(TENANT, "U1", first.session_id, {"one": "x"})
    resumed = await controller.resume(TENANT, "U1")
    assert (resumed.session_id, resumed.step) == (first.session_id, "two")


async def test_the_compiled_update_writes_what_the_orm_would(database) -> None:
    """On each engine the save runs the statement compiled from Tortoise's own UPDATE (not the ORM fallback), and
    the row reads back exactly: data with non-ASCII text, view id, version, expiry, and the version check."""
    assert store._statement(WizardSession._meta.db) is not None
    sessions = store.SessionStore(timedelta(hours=1), schema=None)
    row = await sessions.create(TENANT, "U1", "C1", "one", {"a": [1, "é"], "n": None})
    loaded = await store.load(TENANT, str(row.id), "U1")
    loaded.state, loaded.view_id = "two", "V123"
    loaded.data["b"] = {"nested": "ü"}
    before = datetime.now(UTC)
    await sessions.save(loaded)
    saved = await _row(str(row.id))
    assert (saved.state, saved.view_id, saved.version) == ("two", "V123", 1)
    assert saved.data == {"a": [1, "é"], "n": None, "b": {"nested": "ü"}}
    assert before + timedelta(minutes=59) < saved.expires_at <= datetime.now(UTC) + timedelta(hours=1)
    assert saved.updated_at >= before - timedelta(seconds=1)
    stale = await store.load(TENANT, str(row.id), "U1")
    stale.version = 0
    with pytest.raises(store.StaleSession):
        await store.save(stale)
    assert (await _row(str(row.id))).version == 1


async def test_the_store_forgets_closed_sessions_and_keeps_a_bounded_number(sqlite_db) -> None:
    sessions = store.SessionStore(remember=3, schema=None)
    rows = [await sessions.create(TENANT, "U1", "C1", "one", {"i": i}) for i in range(5)]
    assert list(sessions._copies) == [r.id for r in rows[2:]]
    rows[4].state = "done"
    await sessions.save(rows[4])
    assert rows[4].id not in sessions._copies
    with pytest.raises(store.SessionGone):  # a closed session, even if asked for from memory
        await sessions.load(TENANT, str(rows[4].id), "U1", remembered=True)
    assert (await sessions.load(TENANT, str(rows[3].id), "U1", remembered=True)).data == {"i": 3}
    with pytest.raises(store.SessionGone, match="not valid"):
        await sessions.load(TENANT, "nope", "U1", remembered=True)
    sessions.forget(uuid.uuid4())  # unknown: nothing to do


async def test_saves_that_arrive_together_commit_together_each_with_its_own_answer(database) -> None:
    """Ten sessions saved at once, plus a stale save of one of them, go in one transaction: the ten land, the stale
    one alone is refused, and every session reads back as its own save wrote it."""
    sessions = store.SessionStore(schema=None)
    rows = [await sessions.create(TENANT, "U1", "C1", "one", {"i": i}) for i in range(10)]
    stale = await store.load(TENANT, str(rows[3].id), "U1")
    for row in rows:
        row.data["saved"] = row.data["i"] * 10
    results = await asyncio.gather(*(store.save(r) for r in rows), store.save(stale), return_exceptions=True)
    assert results[:10] == [None] * 10 and isinstance(results[10], store.StaleSession)
    for row in rows:
        saved = await _row(str(row.id))
        assert (saved.version, saved.data) == (1, {"i": row.data["i"], "saved": row.data["i"] * 10})


async def test_a_failed_group_commit_fails_every_save_in_it_and_writes_none(sqlite_db) -> None:
    sessions = store.SessionStore(schema=None)
    rows = [await sessions.create(TENANT, "U1", "C1", "one", {"i": i}) for i in range(3)]
    rows[2].data["bad"] = {1, 2}  # not JSON: the transaction it is in fails
    results = await asyncio.gather(*(store.save(r) for r in rows), return_exceptions=True)
    assert all(isinstance(r, TypeError) for r in results)
    assert [(await _row(str(r.id))).version for r in rows] == [0, 0, 0]
    del rows[2].data["bad"]
    assert await asyncio.gather(*(store.save(r) for r in rows)) == [None, None, None]  # the writer goes on
    assert [(await _row(str(r.id))).version for r in rows] == [1, 1, 1]
