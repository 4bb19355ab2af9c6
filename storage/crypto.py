"""Encryption of secrets at rest with MultiFernet.

Several keys are accepted so that keys can be rotated without downtime: the first key encrypts, every key
decrypts. The keyring is process-wide because Tortoise fields have no per-request context; the application
installs it once at start-up (``install_keyring``) and tests install their own.

Secrets read from the database come back as :class:`Secret`, which holds the *ciphertext* and decrypts only
when ``reveal()`` is called. That keeps plaintext out of reprs, logs and exception messages by construction,
and lets rows be read (listed, rotated) without decrypting what is not needed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from storage.errors import SecretKeyError

_KEY_HELP = (
    "Each key must be a Fernet key: 32 random bytes, URL-safe base64 encoded (44 characters). "
    "Run `backup-bot init` to create one, or generate one with "
    "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
)


def generate_key() -> str:
    """A fresh Fernet key as text, suitable for BACKUPBOT_SECRET_KEYS."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(raw: str | Sequence[str]) -> list[str]:
    """Split and check a comma-separated key list; the message never echoes key material."""
    items = [k.strip() for k in (raw.split(",") if isinstance(raw, str) else raw)]
    keys = [k for k in items if k]
    if not keys:
        raise SecretKeyError(f"BACKUPBOT_SECRET_KEYS is empty. {_KEY_HELP}")
    for index, key in enumerate(keys, start=1):
        try:
            decoded = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            decoded = b""
        if len(decoded) != 32:
            raise SecretKeyError(
                f"BACKUPBOT_SECRET_KEYS: key number {index} of {len(keys)} is not a valid Fernet key. {_KEY_HELP}"
            )
    return keys


class Keyring:
    """MultiFernet over the configured keys; the first one encrypts."""

    def __init__(self, keys: str | Sequence[str]) -> None:
        self.keys = parse_keys(keys)
        self._fernet = MultiFernet([Fernet(k.encode("ascii")) for k in self.keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SecretKeyError(
                "A stored secret cannot be decrypted with any key in BACKUPBOT_SECRET_KEYS. If the key was "
                "rotated, put the previous key back at the end of BACKUPBOT_SECRET_KEYS (comma-separated) and "
                "run `backup-bot rotate-key`; if the key was lost, the secret must be entered again."
            ) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt ``token`` under the first key (decrypting with any of them)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SecretKeyError(
                "A stored secret cannot be re-encrypted: no key in BACKUPBOT_SECRET_KEYS decrypts it. Add the "
                "key it was written with to BACKUPBOT_SECRET_KEYS and run `backup-bot rotate-key` again."
            ) from exc

    def can_decrypt(self, token: str) -> bool:
        try:
            self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True


_active: Keyring | None = None


def install_keyring(keyring: Keyring | None) -> None:
    """Make ``keyring`` the one used by encrypted fields (``None`` uninstalls it)."""
    global _active
    _active = keyring


def active_keyring() -> Keyring:
    if _active is None:
        raise SecretKeyError(
            "No secret keys are loaded, so secrets cannot be read or written. Set BACKUPBOT_SECRET_KEYS "
            "(run `backup-bot init` to create it)."
        )
    return _active


class Secret:
    """A secret as stored: ciphertext only, decrypted on demand.

    ``str()``/``repr()`` never show the plaintext (nor the ciphertext), so a Secret that lands in a log line,
    an f-string or a traceback leaks nothing.
    """

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        self._token = token

    @classmethod
    def seal(cls, plaintext: str) -> Secret:
        return cls(active_keyring().encrypt(plaintext))

    @property
    def token(self) -> str:
        return self._token

    def reveal(self) -> str:
        return active_keyring().decrypt(self._token)

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._token == self._token

    def __hash__(self) -> int:
        return hash(self._token)
