"""The bot's own SSH identity: generated once, private key encrypted at rest in the database.

The bot reaches every server and pool with this one key (see ARCHITECTURE.md); operators install its public
half on their servers (``backup-bot init`` prints it, and the wizard shows a one-line install command).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncssh

from storage.models import BotIdentity

KEY_TYPE = "ssh-ed25519"
COMMENT = "backup-wizard-bot"


@dataclass(frozen=True)
class Identity:
    public_key: str  # OpenSSH line
    created: bool


async def ensure_identity() -> Identity:
    """Return the stored identity, generating and storing one first if there is none."""
    existing = await BotIdentity.get_or_none(name="default")
    if existing is not None:
        return Identity(public_key=existing.public_key, created=False)
    key = asyncssh.generate_private_key(KEY_TYPE, comment=COMMENT)
    public = key.export_public_key("openssh").decode("ascii").strip()
    private = key.export_private_key("openssh").decode("ascii")
    await BotIdentity.create(name="default", key_type=KEY_TYPE, public_key=public, private_key=private)
    return Identity(public_key=public, created=True)


async def load_private_key() -> asyncssh.SSHKey:
    """The bot's private key, decrypted for use by the SSH transport (never written anywhere)."""
    row = await BotIdentity.get(name="default")
    return asyncssh.import_private_key(row.private_key.reveal())
