"""Re-encrypt every stored secret under the first key of the keyring.

Used by ``backup-bot rotate-key``: the operator puts a new key first in BACKUPBOT_SECRET_KEYS and keeps the
old ones after it; this rewrites every encrypted column so the old keys can then be removed. All rows are
rewritten in one transaction: if any secret cannot be decrypted (a key is missing) nothing is changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tortoise.models import Model
from tortoise.transactions import in_transaction

from storage import models
from storage.crypto import Keyring, Secret
from storage.fields import EncryptedTextField


def encrypted_columns() -> dict[type[Model], list[str]]:
    """Every model with encrypted fields, and those fields' names."""
    found: dict[type[Model], list[str]] = {}
    for value in vars(models).values():
        if isinstance(value, type) and issubclass(value, Model) and value is not Model and hasattr(value, "_meta"):
            names = [n for n, f in value._meta.fields_map.items() if isinstance(f, EncryptedTextField)]
            if names:
                found[value] = names
    return found


@dataclass(frozen=True)
class RotationReport:
    rows: int
    secrets: int


async def rotate_all(keyring: Keyring) -> RotationReport:
    """Rewrite each secret as ``keyring.rotate(token)``; all or nothing."""
    rows = secrets = 0
    async with in_transaction():
        for model, names in encrypted_columns().items():
            for row in await model.all().select_for_update():
                changed: dict[str, Secret] = {}
                for name in names:
                    current = getattr(row, name)
                    if current is not None:
                        changed[name] = Secret(keyring.rotate(current.token))
                if changed:
                    await model.filter(pk=row.pk).update(**changed)
                    rows += 1
                    secrets += len(changed)
    return RotationReport(rows=rows, secrets=secrets)
