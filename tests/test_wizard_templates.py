"""Templates: save the reusable part of a wizard's answers, list them per workspace, prefill a new wizard — never
with a server, pool, login or secret in them.
"""

from __future__ import annotations

import json
import uuid

import pytest

from bot.access import Actor, StaticDirectory
from bot.flows.wizard.services import WizardServices
from bot.flows.wizard.steps.base import WizardContext
from bot.flows.wizard.steps.repository import RepositoryStep
from bot.services.templates import TemplateError, list_templates, prefill, save_template, summary
from bot.transport import SSHPool
from storage.crypto import Secret
from storage.models import AuditLog, BackupTemplate
from storage.tenancy import Tenant

DIRECTORY = StaticDirectory(admins=frozenset({"U1"}))  # the tests' user is a Slack admin

TENANT = Tenant("T0001")
MEMBER = Actor(TENANT.team_id, "U1")


def session_data() -> dict:
    """A finished wizard's answers, with everything a template must NOT take."""
    return {
        "server_id": 7, "pool_id": 3, "credential_id": 11, "chain_id": 5, "_user_tz": "Europe/Berlin",
        "backup_type": "postgresql",
        "source": {"databases": ["shop"], "exclude": [], "include_globals": True},
        "snapshot": {"method": "none"},
        "repository": {"mode": "existing", "name": "db1-postgresql-shop", "encryption": "repokey",
                       "compression": "zstd,6", "passphrase_token": Secret.seal("hunter2").token},
        "retention": {"preset": "7d4w6m1y", "keep_daily": 7, "keep_weekly": 4, "keep_monthly": 6, "keep_yearly": 1},
        "schedule": {"days": ["mon", "wed", "fri"], "at": "02:00", "window": None, "timezone": "Europe/Berlin",
                     "priority": 5},
        "setup": {"passphrase_token": Secret.seal("generated").token, "path": "/srv/borg/db1-postgresql-shop"},
        "validation": {"ok": True, "steps": []},
    }  # fmt: skip


async def test_save_list_and_prefill_without_servers_or_secrets(sqlite_db: str) -> None:
    data = session_data()
    template = await save_template(MEMBER, "  nightly pg ", data, description="shop database")
    assert template.name == "nightly pg" and template.created_by == "U1"
    stored = json.dumps(await BackupTemplate.filter(id=template.id).values(), default=str)
    for secret_or_place in ("hunter2", "generated", "passphrase", "/srv/borg", "db1-postgresql-shop", "server_id",
                            "pool_id", "credential"):  # fmt: skip
        assert secret_or_place not in stored
    assert await AuditLog.filter(action="template.create", object_id=str(template.id)).exists()

    await save_template(Actor(TENANT.team_id, "U2"), "a files", {"backup_type": "files", "source": {"paths": ["/etc"]}})
    assert [t.name for t in await list_templates(TENANT)] == ["a files", "nightly pg"]
    assert await list_templates(Tenant("T0002")) == []  # another workspace sees none
    assert "nightly pg" in summary(template) and "mon/wed/fri 02:00" in summary(template)

    filled = await prefill(TENANT, "nightly pg")
    assert filled == {
        "template_id": template.id,
        "backup_type": "postgresql",
        "source": {"databases": ["shop"], "exclude": [], "include_globals": True},
        "repository": {"mode": "new", "encryption": "repokey", "compression": "zstd,6"},
        "snapshot": {"method": "none"},
        "retention": data["retention"],
        "schedule": data["schedule"],
    }
    with pytest.raises(TemplateError, match=r"no template named 'nope'.*a files, nightly pg"):
        await prefill(TENANT, "nope")
    with pytest.raises(TemplateError, match="no template"):
        await prefill(Tenant("T0002"), "nightly pg")

    # The prefilled answers reach the steps, which still check them: step 6 shows the template's compression and
    # proposes a name from the convention once a server is chosen.
    ctx = WizardContext(team_id="T0001", user_id="U1", session_id=str(uuid.uuid4()), data=filled,
                        services=WizardServices(pool=SSHPool([]), directory=DIRECTORY))  # fmt: skip
    fields = {f.name: f for f in (await RepositoryStep().view(ctx)).fields}
    assert fields["compression"].initial == "zstd,6" and fields["encryption"].initial == "repokey"
    assert fields["mode"].initial == "new"


async def test_template_names_and_incomplete_answers_are_refused(sqlite_db: str) -> None:
    data = session_data()
    await save_template(MEMBER, "pg", data)
    with pytest.raises(TemplateError, match="already exists"):
        await save_template(MEMBER, "pg", data)
    await save_template(Actor("T0002", "U9"), "pg", data)  # names are per workspace
    for bad in ("", "   ", "x" * 101, "two\nlines"):
        with pytest.raises(TemplateError):
            await save_template(MEMBER, bad, data)
    with pytest.raises(TemplateError, match="backup type"):
        await save_template(MEMBER, "no type", {"source": {}})
    with pytest.raises(TemplateError, match="source settings"):
        await save_template(MEMBER, "bad source", {"backup_type": "files", "source": {"paths": ["relative"]}})
    with pytest.raises(TemplateError, match="compression"):
        await save_template(MEMBER, "bad comp", {**data, "repository": {"compression": "zstd,99"}})
    assert await BackupTemplate.filter(team_id="T0001").count() == 1
