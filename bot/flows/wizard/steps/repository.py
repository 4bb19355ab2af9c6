"""Step 6 — repository: a new one (name from the convention ``{server}-{type}-{name}``, editable; encryption;
compression) or an existing one on the pool (its passphrase, checked by opening it).

Checked on submit, on the server side:

* the name: borg-safe pattern (:data:`bot.backup.repository.NAME`), not registered on this pool in the database,
  and — for a new repository — nothing at that path on the pool yet (``test -e``); for an existing one the path
  must hold a repository that the passphrase opens (``borg info`` on the pool with the bot's access, which also
  tells its real encryption);
* encryption: one of :data:`bot.borg.init.ENCRYPTIONS` (default ``repokey-blake2``);
* compression: a borg spec, normalised by :func:`bot.borg.create.compression` (``lz4`` default, ``zstd,N``,
  ``auto,zstd,N``, ``none``).

The passphrase of an existing repository is sealed at once (``repository.passphrase_token``); plain text never
enters the session data. Nothing is created here: the validation step creates (or adopts) the repository for real.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.access import Refused, authz
from bot.backup import plan as planning
from bot.backup.plan import PlanProblem
from bot.backup.repository import NAME
from bot.borg import create as borg_create
from bot.borg import info as borg_info
from bot.borg.init import DEFAULT_ENCRYPTION, ENCRYPTIONS
from bot.borg.repo import Repo
from bot.borg.runner import BorgError
from bot.flows.wizard.create import proposed_name
from bot.flows.wizard.steps.base import BaseStep, Errors, Field, Option, StepView, WizardContext
from bot.transport.base import TransportError
from storage.crypto import Secret
from storage.models import Repository, Server
from storage.tenancy import Tenant

ENCRYPTION_LABELS = {
    "repokey-blake2": "repokey-blake2 (recommended: key in the repository, fast)",
    "repokey": "repokey (AES-CTR + HMAC-SHA256)",
    "keyfile-blake2": "keyfile-blake2 (key kept outside the repository)",
    "keyfile": "keyfile",
    "authenticated-blake2": "authenticated-blake2 (signed, NOT encrypted)",
    "authenticated": "authenticated (signed, NOT encrypted)",
    "none": "none (no encryption, no authentication)",
}
COMPRESSION_HINT = (
    "lz4 (fast, default) · zstd,1 … zstd,22 (smaller, slower) · auto,zstd,6 (compress only what shrinks) · none"
)


class RepositoryStep(BaseStep):
    def __init__(self) -> None:
        super().__init__(name="repository", title="Repository", slow=True)  # the submit looks at the pool

    async def _proposal(self, ctx: WizardContext) -> str:
        server = (
            await Tenant(ctx.team_id).get_or_none(Server, id=ctx.data.get("server_id"))
            if isinstance(ctx.data.get("server_id"), int)
            else None
        )
        return proposed_name(server.name if server else "", ctx.data.get("backup_type"), ctx.data.get("source"))

    async def view(self, ctx: WizardContext) -> StepView:
        answer = ctx.data.get("repository") or {}
        mode = answer.get("mode") or "new"
        name = answer.get("name") or await self._proposal(ctx)
        notes = []
        if answer.get("passphrase_token"):
            notes.append("The passphrase you entered is stored encrypted; leave the field empty to keep it.")
        return StepView(
            heading="*Repository* — a new borg repository on the pool, or one that is already there.",
            fields=(
                Field(
                    "mode",
                    "Repository",
                    "radio",
                    options=(
                        Option("new", "Create a new repository", "the bot generates and keeps the passphrase"),
                        Option("existing", "Use an existing repository", "needs its passphrase"),
                    ),
                    initial=mode,
                ),
                Field(
                    "name",
                    "Name",
                    "text",
                    initial=name or None,
                    hint="Also the directory under the pool's base path. Letters, digits, '.', '_' and '-'.",
                    placeholder="web1-files-www",
                ),
                Field(
                    "encryption",
                    "Encryption (new repositories)",
                    "select",
                    options=tuple(Option(e, ENCRYPTION_LABELS.get(e, e)) for e in ENCRYPTIONS),
                    initial=answer.get("encryption") or DEFAULT_ENCRYPTION,
                ),
                Field(
                    "compression",
                    "Compression",
                    "text",
                    initial=answer.get("compression") or "lz4",
                    hint=COMPRESSION_HINT,
                ),
                Field(
                    "passphrase",
                    "Passphrase (existing repositories only)",
                    "text",
                    optional=True,
                    hint="Stored encrypted at once; never shown again. Slack keeps what is typed in this form (it "
                    "stores view submissions): a repository the bot creates needs no passphrase typed here.",
                ),
            ),
            notes=tuple(notes),
        )

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        errors: Errors = {}
        previous = ctx.data.get("repository") or {}
        mode = values.get("mode") or "new"
        if mode not in ("new", "existing"):
            errors["mode"] = "Choose a new or an existing repository."
        name = (values.get("name") or "").strip()
        if not NAME.match(name):
            errors["name"] = (
                "Use 2–100 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit."
            )
        encryption = values.get("encryption") or DEFAULT_ENCRYPTION
        if encryption not in ENCRYPTIONS:
            errors["encryption"] = f"Choose one of: {', '.join(ENCRYPTIONS)}."
        try:
            compression = borg_create.compression(values.get("compression") or "lz4")
        except ValueError as exc:
            errors["compression"] = str(exc)[:150]
            compression = ""
        passphrase = values.get("passphrase") or ""
        token = previous.get("passphrase_token") if previous.get("name") == name else None
        if mode == "existing" and not passphrase and not token:
            errors["passphrase"] = "Enter the passphrase of the existing repository."  # noqa: S105 - a prompt
        if errors:
            return errors
        tenant = Tenant(ctx.team_id)
        try:
            server = await planning.load_server(tenant, ctx.data.get("server_id"))
            pool = await planning.load_pool(tenant, ctx.data.get("pool_id"), server)
        except PlanProblem as exc:
            return {"name": f"{exc.message} (go back to the {exc.step} step)"}
        try:  # the pool is asked about this name next: only while the actor may still store into it
            await authz.require_pool(await ctx.actor(), pool)
        except Refused as exc:
            return {"name": exc.sentence}
        taken = await tenant.query(Repository).filter(pool_id=pool.id, name=name).first()
        own = (ctx.data.get("edit") or {}).get("repository_id")
        if taken is not None and taken.id == own:  # an edit keeping the chain's repository: only compression changes
            current = (ctx.data["edit"].get("setup") or {})
            ctx.data["repository"] = {"mode": "existing", "name": name, "encryption": taken.encryption,
                                      "compression": compression,
                                      "passphrase_token": current.get("passphrase_token")}  # fmt: skip
            return {}
        if taken is not None:
            return {"name": f"The bot already manages a repository named {name} on {pool.name}: choose another name."}
        path = planning.repo_path(pool, name)
        transport = planning.pool_transport(pool, ctx.services)
        answer: dict[str, Any] = {"mode": mode, "name": name, "encryption": encryption, "compression": compression}
        try:
            # The validation step may already have created this very repository (the person came back to
            # change something): that one is ours, not a name clash.
            setup = ctx.data.get("setup") or {}
            ours = setup.get("created") and setup.get("pool_id") == pool.id and setup.get("name") == name
            if mode == "new":
                if not ours and (await transport.run(["test", "-e", path], timeout=30)).ok:
                    return {
                        "name": f"{path} already exists on {pool.name}: choose another name, or use the existing "
                        "repository with its passphrase."
                    }
            else:
                secret = passphrase or planning.reveal(token) or ""
                try:
                    totals = await borg_info.repository(
                        transport, Repo(url=path, passphrase=secret), borg=ctx.services.borg, lock_wait=10
                    )
                except BorgError as exc:
                    if exc.kind == "passphrase":
                        return {"passphrase": "That passphrase does not open the repository."}
                    if exc.kind == "repo_missing":
                        return {"name": f"There is no borg repository at {path} on {pool.name}."}
                    return {"name": f"The repository at {path} could not be opened: {exc}"[:300]}
                answer["encryption"] = totals.encryption if totals.encryption in ENCRYPTIONS else encryption
                answer["passphrase_token"] = Secret.seal(passphrase).token if passphrase else token
        except TransportError as exc:
            return {"name": f"{pool.name} could not be reached: {exc}"[:300]}
        ctx.data["repository"] = answer
        return {}
