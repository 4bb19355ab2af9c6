"""`/backup status <chain>` carries Edit and Restore… only for who may use them (Edit: may_operate, never on a
retired chain; Restore…: admins and the operators of the chain's server); `/backup list` shows a retired chain
with its icon and retirement date, and the App Home leaves it out (tests/test_home.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.access import Actor
from bot.slack import listing
from storage.models import BackupChain, ChainStatus, Role, RoleGrant, Server
from tests.test_slack_listing import NOW, A, make_chain, sections, within_limits

ADMIN = Actor(team_id="T0001", user_id="U0ADMIN", is_admin=True)
CREATOR = Actor(team_id="T0001", user_id="U0CREATOR")
OPERATOR = Actor(team_id="T0001", user_id="U0OPS")
STRANGER = Actor(team_id="T0001", user_id="U0NOBODY")


def buttons(answer: listing.Answer) -> list[tuple[str, str]]:
    return [(e["action_id"], e["value"]) for b in answer.to_dicts() if b["type"] == "actions" for e in b["elements"]]


async def test_status_buttons_follow_the_roles_and_a_retired_chain_is_listed_with_its_date(sqlite_db: str) -> None:
    web = await make_chain(A, "web")
    await BackupChain.filter(id=web.id).update(created_by=CREATOR.user_id)
    server = await Server.get(team_id="T0001", name="srv-web")
    await A.create(RoleGrant, role=Role.OPERATOR, subject=OPERATOR.user_id, server=server, granted_by="U0ADMIN")
    both = [("chain_edit", str(web.id)), ("restore_open", str(web.id))]
    for actor, expected in ((ADMIN, both), (OPERATOR, both), (CREATOR, both[:1]), (STRANGER, []), (None, [])):
        answer = await listing.answer(A, "status web", now=NOW, actor=actor)
        within_limits(answer)
        assert buttons(answer) == expected, actor
    gone = await make_chain(A, "gone", status="retired")
    await BackupChain.filter(id=gone.id).update(retired_at=datetime(2026, 4, 1, 9, tzinfo=UTC))
    answer = await listing.status_answer(A, "gone", now=NOW, actor=ADMIN)
    assert buttons(answer) == [("restore_open", str(gone.id))]  # restorable, no longer editable
    assert sections(answer)[0].splitlines()[0].startswith("*Status:* :file_cabinet: retired Wed 1 Apr 2026, 11:00 CEST")
    listed = await listing.list_answer(A, now=NOW)
    gone_text = next(s for s in sections(listed) if s.startswith("*gone*"))
    assert gone_text.splitlines()[0].startswith("*gone* · :file_cabinet: retired Wed 1 Apr 2026, 11:00 CEST")
    assert "`/backup restore`" in gone_text and "Next run: — (not scheduled while the chain is retired)" in gone_text
    assert ChainStatus.RETIRED in listing.CHAIN_ICONS
