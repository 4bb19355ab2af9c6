"""Templates: a reusable answer set — type, source config, snapshot, retention, compression/encryption, schedule.

A template never holds anything bound to one place or a secret: no server, pool, repository name, database login
or passphrase. ``/backup new from:<name>`` starts the wizard with :func:`prefill`; every step still checks the
prefilled answers on the chosen server (a path or database that does not exist there is refused by its step).

The prefill is a partial session ``data`` dict (see :mod:`bot.services.answers`)::

    backup_type, source, snapshot: {method}, retention, schedule, template_id,
    repository: {mode: "new", encryption, compression}     # no name: step 6 proposes one from the convention
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from bot.access import Actor, Forbidden, NotFound, Refused, authz
from bot.access.audit import record
from bot.backup import sources
from bot.borg import create as borg_create
from bot.borg.init import ENCRYPTIONS
from storage.models import BackupChain, BackupTemplate, BackupType, ChainStatus
from storage.orm import IntegrityError
from storage.tenancy import Tenant

MAX_NAME = 100
_SCHEDULE_KEYS = ("days", "at", "window", "timezone", "priority")


class TemplateError(ValueError):
    """A template cannot be saved or found; the message is for the person."""


def check_name(name: Any) -> str:
    text = (name or "").strip() if isinstance(name, str) else ""
    if not text:
        raise TemplateError("Give the template a name.")
    if len(text) > MAX_NAME or any(c in text for c in "\n\r\t\x00"):
        raise TemplateError(f"A template name is one line of at most {MAX_NAME} characters.")
    return text


def _schedule(schedule: Any) -> dict[str, Any] | None:
    if not isinstance(schedule, Mapping):
        return None
    return {k: copy.deepcopy(schedule[k]) for k in _SCHEDULE_KEYS if k in schedule}


async def save_template(actor: Actor, name: str, data: Mapping[str, Any], *, description: str = "") -> BackupTemplate:
    """Save the reusable part of a session's answers as template ``name`` (unique in the actor's workspace)."""
    tenant, name = actor.tenant, check_name(name)
    backup_type = data.get("backup_type")
    if backup_type not in sources.SOURCES:
        raise TemplateError("Choose a backup type before saving a template.")
    source = data.get("source")
    if not isinstance(source, Mapping) or sources.validate(backup_type, source):
        raise TemplateError("The source settings are not complete, so they cannot be saved as a template.")
    repository = data.get("repository") or {}
    try:
        compression = borg_create.compression(repository.get("compression") or "lz4")
    except ValueError as exc:
        raise TemplateError(str(exc)) from None
    encryption = repository.get("encryption") or "repokey-blake2"
    if encryption not in ENCRYPTIONS:
        encryption = "repokey-blake2"
    if await tenant.query(BackupTemplate).filter(name=name).exists():
        raise TemplateError(f"A template named {name!r} already exists: choose another name.")
    try:
        template = await tenant.create(
            BackupTemplate,
            name=name,
            description=description,
            backup_type=BackupType(backup_type),
            source_config=copy.deepcopy(dict(source)),
            snapshot_method=(data.get("snapshot") or {}).get("method"),
            retention_policy=copy.deepcopy(dict(data.get("retention") or {})),
            compression=compression,
            encryption=encryption,
            schedule=_schedule(data.get("schedule")),
            created_by=actor.user_id,
        )
    except IntegrityError:
        raise TemplateError(f"A template named {name!r} already exists: choose another name.") from None
    await record(actor, "template.create", "template", template.id, name=name, type=backup_type)
    return template


async def list_templates(tenant: Tenant) -> list[BackupTemplate]:
    """The workspace's templates, by name."""
    return await tenant.query(BackupTemplate).order_by("name")


async def get_template(tenant: Tenant, name: str) -> BackupTemplate:
    template = await tenant.get_or_none(BackupTemplate, name=(name or "").strip())
    if template is None:
        known = ", ".join(t.name for t in await list_templates(tenant)) or "none yet"
        raise TemplateError(f"There is no template named {name!r} (templates: {known}).")
    return template


MAX_NAMED = 8


async def remove_template(actor: Actor, name: str) -> BackupTemplate:
    """Given an admin (or the template's creator) and a template's name, remove it when no chain made from it is
    still in use (retired chains do not count: a template holds nothing they need); audited. A refusal names the
    chains that use it."""
    template = await actor.tenant.get_or_none(BackupTemplate, name=(name or "").strip())
    if template is None:
        raise NotFound(f"There is no template named {str(name or '').strip()[:100]!r} in this workspace: "
                       "`/backup templates` lists them.")  # fmt: skip
    if not actor.is_admin and actor.user_id != template.created_by:
        raise Forbidden(f"Only admins and the person who saved {template.name} can remove it — "
                        f"{await authz.who_can_allow(actor.team_id)}.")  # fmt: skip
    users = await actor.tenant.query(BackupChain).filter(template_id=template.id).exclude(
        status=ChainStatus.RETIRED).order_by("name").values_list("name", flat=True)
    if users:
        shown = ", ".join(users[:MAX_NAMED]) + (f" and {len(users) - MAX_NAMED} more" if len(users) > MAX_NAMED
                                                 else "")  # fmt: skip
        raise Refused(f"The template {template.name} is still used by the chain{'s' if len(users) > 1 else ''} "
                      f"{shown}: delete {'them' if len(users) > 1 else 'it'} first (`/backup delete <chain>`). "
                      "Nothing was removed.")  # fmt: skip
    await template.delete()
    await record(actor, "template.remove", "template", template.id,
                 before={"name": template.name, "type": template.backup_type.value})  # fmt: skip
    return template


def prefill_of(template: BackupTemplate) -> dict[str, Any]:
    """The session data a template covers (see the module docstring)."""
    data: dict[str, Any] = {
        "template_id": template.id,
        "backup_type": template.backup_type.value,
        "source": copy.deepcopy(template.source_config),
        "repository": {"mode": "new", "encryption": template.encryption, "compression": template.compression},
    }
    if template.snapshot_method:
        data["snapshot"] = {"method": template.snapshot_method}
    if template.retention_policy:
        data["retention"] = copy.deepcopy(template.retention_policy)
    if template.schedule:
        data["schedule"] = copy.deepcopy(template.schedule)
    return data


async def prefill(tenant: Tenant, name: str) -> dict[str, Any]:
    """The prefill for ``/backup new from:<name>`` (raises :class:`TemplateError` for an unknown name)."""
    return prefill_of(await get_template(tenant, name))


def summary(template: BackupTemplate) -> str:
    """One line for ``/backup templates``."""
    parts = [template.backup_type.value]
    if template.snapshot_method and template.snapshot_method != "none":
        parts.append(f"snapshot {template.snapshot_method}")
    keep = ", ".join(
        f"{k.removeprefix('keep_')} {v}" for k, v in template.retention_policy.items() if k.startswith("keep_") and v
    )
    if keep:
        parts.append(f"keep {keep}")
    if template.schedule and template.schedule.get("days"):
        when = template.schedule.get("at") or "-".join(template.schedule.get("window") or [])
        parts.append(f"{'/'.join(template.schedule['days'])} {when}".strip())
    parts.append(template.compression)
    return f"*{template.name}* — " + " · ".join(parts)
