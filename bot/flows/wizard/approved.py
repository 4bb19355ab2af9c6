"""After an approver approved a wizard's answers: validate them for real, as the requester, and create the chain.

Until the approval nothing of these answers touched a server (validation ran in its deferred form, see
:func:`bot.flows.wizard.steps.validation.waits_for_approval`). Now the requester's own roles are checked again
(a grant withdrawn meanwhile stops it here), the repository is created on the pool, the push key installed and the
test backup run — the same code as validation without approval — and the chain is created active.

The wizard is reopened at its Validation step *before* any of this runs, and closed again only once the chain
exists: when the validation fails, or the bot stops half-way, ``/backup resume`` brings the requester back there,
and since the approval holds for these exact answers, pressing Next with them runs the real validation at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.access import Refused
from bot.backup.plan import PlanProblem
from bot.flows.wizard import create as creating
from bot.flows.wizard import editing as editing_flow
from bot.flows.wizard.controller import WizardController
from bot.flows.wizard.steps.validation import validate
from storage.models import WizardSession
from storage.tenancy import Tenant


@dataclass(frozen=True)
class AfterApproval:
    created: bool
    sentence: str  # for the requester and the approval's thread (Slack mrkdwn)


async def continue_after_approval(controller: WizardController, tenant: Tenant, session_id: str) -> AfterApproval:
    """Given the controller and an approved wizard session, run its validation and create its chain; say what
    happened. Never raises for an outcome a person must hear about."""
    row = await tenant.get_or_none(WizardSession, id=session_id)
    if row is None:
        return AfterApproval(False, "The wizard these answers came from no longer exists; start again with "
                                    "`/backup new`.")  # fmt: skip
    if row.data.get("edit"):
        return await _continue_edit(controller, row)
    name = row.data.get("chain_name") or "the new chain"
    if row.data.get("chain_id"):
        return AfterApproval(True, f"*{name}* was already created.")
    row.state = "validation"
    await controller.store.save(row)  # resumable from here on (with the configured expiry) until the chain exists
    ctx = controller.context_for(row)
    result = await validate(ctx)
    if result["ok"] and not result.get("deferred"):
        try:
            await creating.create_chain(ctx, name=name, save_as=row.data.get("_template_name"),
                                        run_now=bool(row.data.get("_run_now")))  # fmt: skip
        except (creating.CreateError, PlanProblem, Refused) as exc:
            problem = getattr(exc, "message", None) or getattr(exc, "sentence", None) or str(exc)
            return await _failed(controller, row, name, problem)
        row.state = "done"
        await controller.store.save(row)
        return AfterApproval(True, f":white_check_mark: *{name}* was approved, validated and created: "
                                   f"{row.data.get('_result', '')}"[:2900])  # fmt: skip
    failed = [step for step in result["steps"] if not step["ok"]]
    problem = f"{failed[0]['name']}: {failed[0]['detail']}" if failed else "the approval was not found any more"
    return await _failed(controller, row, name, problem)


async def _failed(controller: WizardController, row: WizardSession, name: str, problem: str) -> AfterApproval:
    await controller.store.save(row)  # the validation's result, kept for the Validation step the requester sees
    return AfterApproval(False, f":x: *{name}* was approved, but its validation failed: {problem[:1500]}. "
                                "Nothing was created. `/backup resume` reopens the wizard at Validation: fix it and "
                                "run it again (these answers are still approved).")  # fmt: skip


async def _continue_edit(controller: WizardController, row: WizardSession) -> AfterApproval:
    """An approved change of a chain (``/backup edit``): validate what changed, as the requester, then apply it.
    Reopened at Validation first, so a failure (or a stop half-way) leaves it resumable with these answers."""
    name = row.data["edit"].get("chain_name") or "the chain"
    if row.state == "done" and row.data.get("_applied"):
        return AfterApproval(True, f"The change of *{name}* was already applied.")
    row.state = "validation"
    await controller.store.save(row)
    ctx = controller.context_for(row)
    result = await validate(ctx)
    if not result["ok"] or result.get("deferred"):
        failed = [step for step in result["steps"] if not step["ok"]]
        problem = f"{failed[0]['name']}: {failed[0]['detail']}" if failed else "the approval was not found any more"
        await controller.store.save(row)
        return AfterApproval(False, f":x: The change of *{name}* was approved, but its validation failed: "
                                    f"{problem[:1500]}. Nothing was changed. `/backup resume` reopens the wizard at "
                                    "Validation: fix it and run it again.")  # fmt: skip
    errors = await editing_flow.applied(ctx, [])
    if errors:
        await controller.store.save(row)
        return AfterApproval(False, f":x: The change of *{name}* was approved but not applied: "
                                    f"{next(iter(errors.values()))[:1500]}")  # fmt: skip
    row.data["_applied"] = True
    row.state = "done"
    await controller.store.save(row)
    return AfterApproval(True, f"{row.data.get('_result', '')}"[:2900])
