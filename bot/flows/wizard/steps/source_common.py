"""What the server, source and snapshot steps share: the chosen server, a probe context on it, field errors
from the sources' validation sentences, and keeping data that a refused submit must not lose.

Data keys besides the contract in :mod:`bot.services.answers`, all JSON and secret-free:

    size_estimate: {total_bytes: int, complete: bool, summary: str, paths: [str]}   step 3 — the source's size
        (read by step 5 for the projected repository size; ``complete`` False = a lower bound or a rough figure)

and private ones, written by steps 3 and 4 and read only by them (the ``_`` prefix marks them as the wizard's own):

    _source_found: {engine, credential_id, databases: [str], datadir: str|None}   step 3 — what a stored/new login saw
    _source_mounts: [{target, source, fstype, size_bytes, avail_bytes}]   step 3 (system) — other file systems
    _snapshot_methods: {paths, per_path: [...], available: [method], recommended: method|None}   steps 3/4
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.flows.wizard.steps.base import Button, Errors, Field, WizardContext
from bot.inventory import cached_capabilities, ssh_target
from bot.probes import system
from bot.probes.base import ProbeContext
from bot.probes.capabilities import Capabilities
from storage.models import Server
from storage.tenancy import Tenant

# Keys that depend on the server and the source: dropped when either changes, so no stale answer survives.
SOURCE_KEYS = ("source", "credential_id", "atomicity", "size_estimate", "_source_found", "_source_mounts")
SNAPSHOT_KEYS = ("snapshot", "_snapshot_methods")

# The hint on every input where a secret may still be typed: Slack stores view submissions (what is typed in a
# modal) in its own history, so the secret-free ways are offered above such an input and this says why.
SLACK_KEEPS_TYPED = ("Slack keeps what is typed in this form (it stores view submissions), so prefer the ways above "
                     "that keep the secret out of Slack.")  # fmt: skip


def credential_add_command(team_id: str, server: str, engine: str, *, user: str | None = None,
                           host: str | None = None, port: int | None = None) -> str:  # fmt: skip
    """Given a server and a database type, return the ``backup-bot credential add`` command that stores a login for
    it from the bot's host (prompting for the password without echo), every known part filled in and quoted."""
    words = ["backup-bot", "credential", "add", "--team", team_id, "--server", server, "--type", engine,
             "--user", user or "USER"]  # fmt: skip
    if host and host != "localhost":
        words += ["--host", host]
    if port:
        words += ["--port", str(port)]
    return shlex.join(words)


@dataclass
class Part:
    """One type's share of the source step's view."""

    fields: tuple[Field, ...] = ()
    notes: tuple[str, ...] = ()
    buttons: tuple[Button, ...] = ()


async def current_server(ctx: WizardContext) -> Server | None:
    server_id = ctx.data.get("server_id")
    if server_id is None:
        return None
    return await Tenant(ctx.team_id).get_or_none(Server, id=server_id)


def capabilities_of(server: Server | None) -> Capabilities | None:
    return cached_capabilities(server) if server is not None else None


def probe_context(ctx: WizardContext, server: Server, caps: Capabilities | None) -> ProbeContext:
    """A probe context on ``server`` through the bot's pool, privileged as the system probe found."""
    base = ProbeContext(ctx.services.pool.transport(ssh_target(server)))
    info = caps.get("system", system.SystemInfo) if caps is not None else None
    return system.context_for(base, info) if info is not None else base


def forget(data: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        data.pop(key, None)


def errors_from(problems: Iterable[str], fields: Mapping[str, str], default: str) -> Errors:
    """Validation sentences (``"paths: /a is inside /"``) as inline errors keyed by the field they are about."""
    errors: Errors = {}
    for problem in problems:
        where, sep, message = problem.partition(": ")
        config_field = where.split(".")[0] if sep else ""
        field_name = fields.get(config_field, default)
        text = (message if sep and config_field in fields else problem).strip()
        text = text[0].upper() + text[1:] if text else text
        errors[field_name] = f"{errors[field_name]} {text}" if field_name in errors else text
    return {k: (v if v.endswith(".") else v + ".") for k, v in errors.items()}


def lines_of(value: Any) -> list[str]:
    """A multiline text value (or a list) as its non-empty stripped lines."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [line.strip() for line in str(value).splitlines() if line.strip()]


def human_bytes(n: int | None) -> str:
    if n is None:
        return "unknown size"
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def clip(text: str, limit: int = 75) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
