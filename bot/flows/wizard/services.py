"""What wizard steps may use besides the database: the SSH pool, alerts, probe table, limits.

Kept as one small object handed to every step through :class:`~bot.flows.wizard.steps.base.WizardContext`,
so tests can run steps with real services and without Slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.access import Directory, NoDirectory
from bot.alerts import AlertBus
from bot.probes.capabilities import ProbeSpec
from bot.probes.registry import default_specs
from bot.transport import SSHPool


@dataclass
class WizardServices:
    pool: SSHPool
    alerts: AlertBus = field(default_factory=AlertBus)
    specs: list[ProbeSpec] = field(default_factory=default_specs)
    bot_public_key: str = ""
    test_backup_limit: float = 45.0  # seconds a dump may run during the test backup
    borg: str = "borg"  # borg on servers (a test harness may point at its own)
    extra: dict[str, Any] = field(default_factory=dict)
    directory: Directory = field(default_factory=NoDirectory)  # who is a Slack admin / in a user group
