"""What a click does before Slack gets its answer, and what it leaves until after: a fast step answers with the next
screen and saves right after (the save can still lose to a newer one, and then the modal says so), a slow step
answers "working…" after one read, a slow step's button shows "working…" from the same read, and the store reads a
session as its last save writes it even while that save is still running."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from bot.flows.wizard import store
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, StepView, WizardContext
from bot.slack import wizard as listeners
from storage.models import WizardSession
from storage.tenancy import Tenant

TENANT = Tenant("T0001")


class Ask(BaseStep):
    def __init__(self, name: str, *, slow: bool = False) -> None:
        super().__init__(name=name, title=name.title(), slow=slow)
        self.submitted = 0
        self.acted: list[str] = []

    async def view(self, ctx: WizardContext) -> StepView:
        return StepView(heading=self.name, fields=(Field(self.name, self.name, "text"),))

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        self.submitted += 1
        if not values.get(self.name):
            ctx.data["refused"] = ctx.data.get("refused", 0) + 1  # learnt something even so
            return {self.name: "required"}
        ctx.data[self.name] = values[self.name]
        return {}

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        self.acted.append(action)
        return "acted"


@pytest.fixture
def steps() -> list[Ask]:
    return [Ask("one"), Ask("two", slow=True), Ask("three")]


@pytest.fixture
def controller(steps) -> WizardController:
    return WizardController(lambda: steps, services=None, schema=None)


async def _row(session_id: str) -> WizardSession:
    return await WizardSession.get(id=session_id)


async def test_a_fast_step_answers_before_its_save(sqlite_db, controller) -> None:
    start = await controller.start(TENANT, "U1", "C1")
    screen = await controller.submit(TENANT, "U1", start.session_id, {"one": "x"}, save_later=True)
    assert screen.step == "two" and screen.commit is not None
    row = await _row(start.session_id)
    assert (row.state, row.version) == ("one", 0)  # nothing written yet
    await screen.commit()
    row = await _row(start.session_id)
    assert (row.state, row.version, row.data["one"]) == ("two", 1, "x")


async def test_a_refused_answer_is_saved_after_it_too(sqlite_db, controller) -> None:
    start = await controller.start(TENANT, "U1", "C1")
    screen = await controller.submit(TENANT, "U1", start.session_id, {}, save_later=True)
    assert screen.errors == {"one": "required"} and screen.commit is not None
    await screen.commit()
    row = await _row(start.session_id)
    assert (row.state, row.data["refused"]) == ("one", 1)


async def test_finishing_saves_before_the_answer(sqlite_db) -> None:
    controller = WizardController(lambda: [Ask("only")], services=None, schema=None)
    start = await controller.start(TENANT, "U1", "C1")
    screen = await controller.submit(TENANT, "U1", start.session_id, {"only": "x"}, save_later=True)
    assert screen.step == "done" and screen.commit is None
    assert (await _row(start.session_id)).state == "done"


async def test_a_slow_step_is_deferred_with_its_title_and_not_run(sqlite_db, controller, steps) -> None:
    start = await controller.start(TENANT, "U1", "C1")
    await controller.submit(TENANT, "U1", start.session_id, {"one": "x"})
    deferred = await controller.submit(TENANT, "U1", start.session_id, {"two": "y"}, defer_slow=True)
    assert deferred.deferred and deferred.title == "Two" and deferred.commit is None
    assert steps[1].submitted == 0
    done = await controller.submit(TENANT, "U1", start.session_id, {"two": "y"})
    assert done.step == "three" and not done.deferred


async def test_a_slow_steps_button_says_working_first(sqlite_db, controller, steps) -> None:
    start = await controller.start(TENANT, "U1", "C1")
    shown: list[tuple[str, list[str]]] = []

    async def working(title: str) -> None:
        shown.append((title, list(steps[1].acted)))

    await controller.act(TENANT, "U1", start.session_id, "ping", "", on_slow=working)
    assert shown == [] and steps[0].acted == ["ping"]  # a fast step: no "working…"
    await controller.submit(TENANT, "U1", start.session_id, {"one": "x"})
    screen = await controller.act(TENANT, "U1", start.session_id, "ping", "", on_slow=working)
    assert shown == [("Two", [])] and steps[1].acted == ["ping"] and screen.note == "acted"  # "working…" came first


class Client:
    """Stands for the Web API client: records views.update."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, dict]] = []

    async def views_update(self, *, view_id: str, view: dict) -> None:
        self.updates.append((view_id, view))


async def test_a_save_that_loses_shows_why(sqlite_db, controller, monkeypatch) -> None:
    monkeypatch.setattr(listeners, "ACK_SETTLE", 0.0)
    start = await controller.start(TENANT, "U1", "C1")
    first = await controller.submit(TENANT, "U1", start.session_id, {"one": "x"}, save_later=True)
    second = await controller.submit(TENANT, "U1", start.session_id, {"one": "y"}, save_later=True)  # double click
    client = Client()
    await listeners._commit(first, client, "V1")  # type: ignore[arg-type]
    assert client.updates == []
    await listeners._commit(second, client, "V1")  # type: ignore[arg-type]
    assert [view_id for view_id, _ in client.updates] == ["V1"]
    assert "changed in another window" in str(client.updates[0][1])
    assert (await _row(start.session_id)).data["one"] == "x"


@pytest.fixture
def held_saves(monkeypatch) -> asyncio.Event:
    """Saves wait for this event before they write (as if the database were busy)."""
    gate = asyncio.Event()
    write = store._write

    async def slow_write(row, ttl, schema):
        await gate.wait()
        await write(row, ttl, schema)

    monkeypatch.setattr(store, "_write", slow_write)
    return gate


async def test_a_load_reads_what_the_running_save_writes(sqlite_db, controller, held_saves) -> None:
    a = await controller.start(TENANT, "U1", "C1")
    b = await controller.start(TENANT, "U1", "C1")
    row = await store.load(TENANT, a.session_id, "U1")
    row.data["seen"] = "new"
    saving = asyncio.create_task(store.save(row))
    await asyncio.sleep(0)
    loading = asyncio.create_task(store.load(TENANT, a.session_id, "U1"))
    other = await store.load(TENANT, b.session_id, "U1")  # other sessions are not held up
    assert other.version == 0 and not loading.done()
    held_saves.set()
    await saving
    loaded = await loading
    assert (loaded.data["seen"], loaded.version) == ("new", 1)


async def test_resume_reads_a_running_save(sqlite_db, controller, held_saves) -> None:
    a = await controller.start(TENANT, "U1", "C1")
    screen = await controller.submit(TENANT, "U1", a.session_id, {"one": "x"}, save_later=True)
    assert screen.commit is not None
    committing = asyncio.create_task(screen.commit())
    await asyncio.sleep(0)
    resuming = asyncio.create_task(controller.resume(TENANT, "U1"))
    await asyncio.sleep(0.05)
    assert not resuming.done()
    held_saves.set()
    await committing
    assert (await resuming).step == "two"


async def test_two_saves_of_one_session_keep_their_order(sqlite_db, controller, held_saves) -> None:
    a = await controller.start(TENANT, "U1", "C1")
    first = await store.load(TENANT, a.session_id, "U1")
    second = await store.load(TENANT, a.session_id, "U1")
    first.data["n"], second.data["n"] = 1, 2
    one = asyncio.create_task(store.save(first))
    await asyncio.sleep(0)
    two = asyncio.create_task(store.save(second))
    held_saves.set()
    await one
    with pytest.raises(store.StaleSession):  # the later save lost, as a double click's second save must
        await two
    assert (await _row(a.session_id)).data["n"] == 1
