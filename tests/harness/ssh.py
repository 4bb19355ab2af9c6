"""SSH pools and probe contexts for sshd test hosts, closed after the test.

``pool_for(host, **pool_options)`` gives an :class:`~bot.transport.SSHPool` holding the host's client key;
``ctx_for(host, **context_options)`` a :class:`~bot.probes.base.ProbeContext` on that host, pinned to its key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncssh
import pytest

from bot.probes.base import ProbeContext
from bot.transport import SSHPool, SSHTarget


def target_of(host: Any) -> SSHTarget:
    return SSHTarget(host.host, host.port, host.user, host.host_public_key)


@pytest.fixture
async def pool_for() -> AsyncIterator[Callable[..., SSHPool]]:
    pools: list[SSHPool] = []

    def make(host: Any, **options: Any) -> SSHPool:
        pool = SSHPool([asyncssh.read_private_key(host.client_key_path)], **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
def ctx_for(pool_for: Callable[..., SSHPool]) -> Callable[..., ProbeContext]:
    def make(host: Any, **options: Any) -> ProbeContext:
        # As the system probe would decide for these hosts: only root is privileged (no sudo for others).
        options.setdefault("privileged", host.user == "root")
        return ProbeContext(pool_for(host).transport(target_of(host)), **options)

    return make


@pytest.fixture
def bot_key(tmp_path: Any) -> tuple[Any, str]:
    """The bot's own SSH key pair for a test: (private key path, public key line)."""
    from tests.harness.sshd import generate_ed25519

    path = tmp_path / "bot_ed25519"
    return path, generate_ed25519(path, "backup-bot")


@pytest.fixture
async def services(bot_key: tuple[Any, str], request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The wizard's services with the bot's key. Who is a Slack admin comes from the test module's ``DIRECTORY``
    (a :class:`~bot.access.StaticDirectory`; without one, nobody is)."""
    from bot.access import NoDirectory
    from bot.alerts import AlertBus
    from bot.flows.wizard.services import WizardServices

    pool = SSHPool([asyncssh.read_private_key(bot_key[0])], connect_timeout=5)
    directory = getattr(request.module, "DIRECTORY", None) or NoDirectory()
    yield WizardServices(pool=pool, bot_public_key=bot_key[1], alerts=AlertBus(), directory=directory)
    await pool.close()
