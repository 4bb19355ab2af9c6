"""A Tortoise field that stores a :class:`~storage.crypto.Secret` encrypted.

The column holds ``fernet:<token>``. The prefix (followed by a token's shape, :func:`looks_sealed`) is what lets the
field tell a value read from the database (already encrypted) from a plaintext a caller passes to
``Model(...)``/``create(...)``: Tortoise calls ``to_python_value`` for both. Plaintext is sealed as soon as it reaches
the model, so a model instance never holds it, and assigning a plain ``str`` to the attribute later is sealed on save.
The column is TEXT on every engine because tokens grow with the plaintext (SSH private keys, repokey exports).
"""

from __future__ import annotations

import base64
from typing import Any

from tortoise.fields import TextField
from tortoise.models import Model

from storage.crypto import Secret

PREFIX = "fernet:"


class EncryptedTextField(TextField):
    """TEXT column holding ``fernet:<token>``; never plaintext."""

    def to_db_value(self, value: Any, instance: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = Secret.seal(value)
            if isinstance(instance, Model) and self.model_field_name:
                # Replace the plaintext on the instance too, so it does not linger in memory or reprs.
                setattr(instance, self.model_field_name, value)
        if not isinstance(value, Secret):
            raise TypeError(f"{self.model_field_name or 'an encrypted field'} takes a str or a Secret")
        return PREFIX + value.token

    def to_python_value(self, value: Any) -> Secret | None:
        if value is None or isinstance(value, Secret):
            return value
        text = str(value)
        if text.startswith(PREFIX) and looks_sealed(text[len(PREFIX) :]):
            return Secret(text[len(PREFIX) :])
        return Secret.seal(text)  # plaintext from a caller — even one that happens to start with "fernet:"


def looks_sealed(token: str) -> bool:
    """Given what follows the prefix, return whether it has the shape of a Fernet token (base64url of version byte
    0x80, timestamp, IV, whole AES blocks, HMAC), so a typed password like ``fernet:abc`` is sealed, not trusted."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return len(raw) >= 73 and raw[0] == 0x80 and (len(raw) - 57) % 16 == 0
