"""Source form for Docker: volumes to archive, what happens to the containers using them, database containers
to dump — all from the Docker probe's facts (cached with the server's capabilities).

Prefilled with the local volumes some container uses and every database container found. Containers that use
a volume get a policy each: keep running (``none``), ``pause`` (frozen for the seconds of the copy) or
``stop`` (clean shutdown, consistent copy); at most :data:`MAX_POLICIES` are asked, the rest keep running.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.backup import sources
from bot.flows.wizard.steps.base import Errors, Field, Option, WizardContext
from bot.flows.wizard.steps.source_common import Part, clip, errors_from, human_bytes, lines_of
from bot.flows.wizard.steps.source_files import previous
from bot.probes import docker_models
from bot.probes.capabilities import Capabilities
from storage.models import Server

POLICY = "policy:"  # field name prefix, followed by the container's name
MAX_POLICIES = 20
POLICIES = (
    Option("none", "Keep running", "archived while running"),
    Option("pause", "Pause during the copy", "frozen for seconds, memory kept"),
    Option("stop", "Stop during the copy", "clean shutdown: a consistent copy"),
)
CONFIG_FIELDS = {"volumes": "volumes", "databases": "db_containers", "policies": "volumes", "stop_timeout": "volumes"}


def facts_of(caps: Capabilities | None) -> docker_models.DockerFacts | None:
    return caps.get("docker", docker_models.DockerFacts) if caps is not None else None


def _volumes(facts: docker_models.DockerFacts) -> list[docker_models.Volume]:
    return [v for v in facts.volumes if v.driver == "local" and v.mountpoint][:100]


def _volume_label(volume: docker_models.Volume) -> str:
    size = human_bytes(volume.size_bytes) if volume.size_bytes is not None else "size unknown"
    users = f", used by {', '.join(volume.used_by)}" if volume.used_by else ", unused"
    return clip(f"{volume.name} ({size}{users})")


def _holders(facts: docker_models.DockerFacts) -> list[docker_models.Container]:
    offered = {v.name for v in _volumes(facts)}
    found = [c for c in facts.containers if c.running and offered.intersection(c.volume_names)]
    return sorted(found, key=lambda c: c.name)[:MAX_POLICIES]


async def view(ctx: WizardContext, server: Server, caps: Capabilities | None) -> Part:
    facts = facts_of(caps)
    if facts is None:
        outcome = caps.outcomes.get("docker") if caps is not None else None
        reason = outcome.error if outcome is not None and outcome.error else "the server was not probed for it"
        return Part(notes=(f":warning: Docker: {reason}",))
    stored = previous(ctx, "docker")
    volumes = _volumes(facts)
    fields: list[Field] = []
    if volumes:
        initial = list(stored["volumes"]) if stored else [v.name for v in volumes if v.used_by]
        fields.append(Field("volumes", "Volumes to back up", "multiselect", optional=True, initial=initial,
                            options=tuple(Option(v.name, _volume_label(v)) for v in volumes)))  # fmt: skip
    databases = facts.databases[:100]
    if databases:
        initial = [d["container"] for d in stored["databases"]] if stored else [d.container for d in databases]
        fields.append(Field(
            "db_containers", "Database containers to dump", "multiselect", optional=True, initial=initial,
            options=tuple(Option(d.container, clip(f"{d.container} — {d.engine_name} ({d.image})")) for d in databases),
            hint="Dumped inside the container with its own client and credentials (all its databases).",
        ))  # fmt: skip
    policies = dict(stored["policies"]) if stored else {}
    for container in _holders(facts):
        fields.append(Field(f"{POLICY}{container.name}", f"While its volumes are copied: {container.name}", "select",
                            options=POLICIES, initial=policies.get(container.name, "none")))  # fmt: skip
    running = sum(1 for c in facts.containers if c.running)
    notes = [f":whale: Docker {facts.version.server_version or facts.version.client_version}: "
             f"{len(facts.containers)} containers ({running} running), {len(volumes)} local volumes, "
             f"{len(databases)} database containers."]  # fmt: skip
    if not volumes and not databases:
        notes.append(":warning: There are no local volumes and no database containers to back up on this server.")
    notes.extend(facts.notes)
    return Part(fields=tuple(fields), notes=tuple(notes))


async def submit(ctx: WizardContext, server: Server, caps: Capabilities | None, values: Mapping[str, Any]) -> Errors:
    facts = facts_of(caps)
    if facts is None:
        return {"volumes": "Docker is not available on this server; choose another backup type."}
    volumes = lines_of(values.get("volumes"))
    containers = lines_of(values.get("db_containers"))
    offered = {v.name for v in _volumes(facts)}
    unknown = [v for v in volumes if v not in offered]
    if unknown:
        return {"volumes": f"{', '.join(unknown)}: no such local volume on this server (any more)."}
    known_dbs = {d.container for d in facts.databases}
    unknown = [c for c in containers if c not in known_dbs]
    if unknown:
        return {"db_containers": f"{', '.join(unknown)}: not a database container found on this server."}
    errors: Errors = {}
    policies: dict[str, str] = {}
    for name, value in values.items():
        if name.startswith(POLICY):
            if value not in ("none", "pause", "stop", None):
                errors[name] = "Choose keep running, pause or stop."
            elif value in ("pause", "stop"):
                policies[name[len(POLICY) :]] = value
    if errors:
        return errors
    stored = previous(ctx, "docker")
    before = {d["container"]: d for d in stored["databases"]} if stored else {}
    config = {"volumes": volumes, "policies": policies,
              "databases": [before.get(c, {"container": c}) for c in containers]}  # fmt: skip
    problems = sources.validate("docker", config)
    if problems:
        return errors_from(problems, CONFIG_FIELDS, "volumes")
    parsed = sources.load_config("docker", config)
    ctx.data["source"] = parsed.model_dump(mode="json")
    sizes = [facts.volume(v).size_bytes for v in parsed.volumes]
    total = sum(s for s in sizes if s is not None)
    exact = all(s is not None for s in sizes)
    ctx.data["size_estimate"] = {"total_bytes": total, "complete": exact, "paths": list(parsed.volumes),
                                "summary": f"{'' if exact else 'at least '}{human_bytes(total)} in "
                                           f"{len(parsed.volumes)} volume(s), plus the dumps."}  # fmt: skip
    return {}
