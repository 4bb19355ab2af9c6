"""The bot's own SSH identity: generated once, private key encrypted at rest in the database.

The bot reaches every server and pool with this one key (see ARCHITECTURE.md); operators install its public
half on their servers (``backup-bot init`` prints it, and the wizard shows a one-line install command).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.transport.keys import PrivateKey, generate_key_pair
from bot.transport.keys import load_private_key as _parse_private_key
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
    pair = generate_key_pair(COMMENT, KEY_TYPE)
    await BotIdentity.create(name="default", key_type=KEY_TYPE, public_key=pair.public, private_key=pair.private)
    return Identity(public_key=pair.public, created=True)


async def load_private_key() -> PrivateKey:
    """The bot's private key, decrypted for use by the SSH transport (never written anywhere)."""
    row = await BotIdentity.get(name="default")
    return _parse_private_key(row.private_key.reveal())
