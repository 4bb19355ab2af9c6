"""Approvals by button, driven through the Slack emulator: request message, who may decide, reject with a reason,
one winner under concurrent clicks, the message updated, the requester told in a DM, the AuditLog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.access import Actor, Refused
from bot.services.approvals import decide, request_approval
from bot.slack.approvals import APPROVE, REASON_INPUT, REJECT
from storage.models import Approval, ApprovalStatus, AuditLog, BackupChain, ChainStatus
from tests.test_reports import APPROVALS, Env, buttons, make_chain, start_env, text_of

RULES = {"required": True, "approvers": ["U0LEAD", "S0OPS"], "channel": APPROVALS}


@pytest.fixture
async def env(sqlite_db: str, tmp_path: Path) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, RULES):
        yield e


async def _requested(env: Env) -> tuple[BackupChain, Approval, dict]:
    chain = await make_chain(status=ChainStatus.PENDING_APPROVAL)
    approval = await request_approval(chain, Actor(chain.team_id, "U0REQ"), alerts=env.bus)
    await env.outbox.wait_delivered()
    (message,) = env.slack.messages(APPROVALS)
    return chain, approval, message


def _dm_texts(env: Env, user: str) -> list[str]:
    opened = [c for c in env.slack.calls_to("conversations.open") if c.params.get("users") == user and c.ok]
    if not opened:
        return []
    return [m["text"] for m in env.slack.messages(opened[-1].response["channel"]["id"])]


async def _wait(predicate, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_request_message_shows_summary_and_buttons(env: Env) -> None:
    _chain, approval, message = await _requested(env)
    body = text_of(message)
    assert "Approval needed: nightly" in body
    assert "<@U0REQ>" in body and "nightly-repo" in body and "/srv/borg/nightly" in body
    assert "Mon, Wed, Fri" in body and "<#C0REP>" in body
    assert buttons(message) == [("Approve", APPROVE, str(approval.id)), ("Reject", REJECT, str(approval.id))]
    await approval.refresh_from_db()
    assert (approval.channel_id, approval.message_ts) == (APPROVALS, message["ts"])


async def test_approve_updates_message_activates_chain_and_tells_requester(env: Env) -> None:
    chain, approval, message = await _requested(env)
    await env.driver.click(APPROVE, user="U0LEAD", channel=APPROVALS, ts=message["ts"])
    await _wait(lambda: _done(env))
    (updated,) = env.slack.messages(APPROVALS)
    assert buttons(updated) == [] and "✅ Approved by <@U0LEAD>" in text_of(updated)
    assert "Approval needed: nightly" in text_of(updated)  # the summary stays
    await chain.refresh_from_db()
    await approval.refresh_from_db()
    assert chain.status == ChainStatus.ACTIVE
    assert (approval.status, approval.decided_by) == (ApprovalStatus.APPROVED, "U0LEAD")
    assert approval.decided_at is not None
    (dm,) = _dm_texts(env, "U0REQ")
    assert "*nightly* was approved by <@U0LEAD>" in dm
    actions = await AuditLog.filter(team_id="T0001", object_id=str(chain.id)).values_list("action", flat=True)
    assert list(actions) == ["approval.request", "approval.approve"]


async def _done(env: Env) -> bool:
    """The decision is announced: the request message lost its buttons and the requester got the DM."""
    shown = not buttons(env.slack.messages(APPROVALS)[0]) and bool(_dm_texts(env, "U0REQ"))
    return shown and await env.outbox.pending() == 0


async def test_non_approver_is_refused_with_an_ephemeral(env: Env) -> None:
    _chain, approval, message = await _requested(env)
    for action in (APPROVE, REJECT):
        await env.driver.click(action, user="U0BOB", channel=APPROVALS, ts=message["ts"])
    await _wait(lambda: _count(env, "U0BOB", 2))
    notes = [e["text"] for e in env.slack.ephemerals(user="U0BOB")]
    assert all("not allowed" in n for n in notes)
    assert env.slack.current_view("U0BOB") is None  # no reject modal for them
    await approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    assert buttons(env.slack.messages(APPROVALS)[0])  # still decidable


async def _count(env: Env, user: str, n: int) -> bool:
    return len(env.slack.ephemerals(user=user)) >= n


async def test_reject_asks_for_a_reason_and_tells_requester(env: Env) -> None:
    chain, approval, message = await _requested(env)
    await env.driver.click(REJECT, user="U0OPS", channel=APPROVALS, ts=message["ts"])  # U0OPS: via user group
    view = await env.driver.wait_for_view(user="U0OPS")
    assert view["title"]["text"] == "Reject backup chain" and view["private_metadata"] == str(approval.id)
    await env.driver.set_value(REASON_INPUT, "No retention policy; please keep 30 daily.", user="U0OPS")
    await env.driver.submit(user="U0OPS")
    await _wait(lambda: _done(env))
    (updated,) = env.slack.messages(APPROVALS)
    assert "❌ Rejected by <@U0OPS>: No retention policy; please keep 30 daily." in text_of(updated)
    assert buttons(updated) == []
    await chain.refresh_from_db()
    assert chain.status == ChainStatus.REJECTED
    (dm,) = _dm_texts(env, "U0REQ")
    assert "was rejected by <@U0OPS>" in dm and "*Reason:* No retention policy" in dm
    assert await AuditLog.filter(action="approval.reject", actor="U0OPS").count() == 1


async def test_concurrent_clicks_one_decision_wins(env: Env) -> None:
    _chain, approval, message = await _requested(env)
    clickers = ["U0LEAD", "U0OPS", "U0LEAD", "U0OPS"]
    await asyncio.gather(*(env.driver.click(APPROVE, user=u, channel=APPROVALS, ts=message["ts"]) for u in clickers))
    await _wait(lambda: _done(env))
    await _wait(lambda: _losers_told(env, 3))
    decisions = await AuditLog.filter(action__in=["approval.approve", "approval.reject"]).count()
    assert decisions == 1
    await approval.refresh_from_db()
    winner = approval.decided_by
    updates = [c for c in env.slack.calls_to("chat.update") if c.params.get("ts") == message["ts"]]
    assert len(updates) == 1 and f"Approved by <@{winner}>" in text_of(env.slack.messages(APPROVALS)[0])
    assert len(_dm_texts(env, "U0REQ")) == 1
    losers = [e["text"] for e in env.slack.ephemerals()]
    assert all(("Too late" in t or "Already decided" in t) and f"<@{winner}>" in t for t in losers)


async def _losers_told(env: Env, n: int) -> bool:
    return len(env.slack.ephemerals()) >= n


async def test_compare_and_set_under_many_concurrent_deciders(env: Env) -> None:
    chain = await make_chain("other", status=ChainStatus.PENDING_APPROVAL)
    approval = await request_approval(chain, Actor(chain.team_id, "U0REQ"))
    deciders = [Actor("T0001", f"U0X{i}", groups=frozenset({"S0OPS"})) for i in range(12)]  # approvers by group
    results = await asyncio.gather(
        *(decide(actor, approval.id, approve=i % 2 == 0, reason="r") for i, actor in enumerate(deciders)),
        return_exceptions=True,
    )
    winners = [r.approval for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(losers) == 11
    assert all(isinstance(r, Refused) and ("Too late" in r.sentence or "Already decided" in r.sentence)
               for r in losers)
    await chain.refresh_from_db()
    expected = ChainStatus.ACTIVE if winners[0].status == ApprovalStatus.APPROVED else ChainStatus.REJECTED
    assert chain.status == expected
    assert await AuditLog.filter(action__in=["approval.approve", "approval.reject"]).count() == 1
