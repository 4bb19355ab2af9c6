"""SSH key pairs: generated and loaded here, so that only the transport knows asyncssh (an import contract checks it).

Callers get plain OpenSSH text (:class:`KeyPair`) to store or install, and hand a loaded :data:`PrivateKey` back
to :class:`~bot.transport.ssh.SSHPool`; they never touch asyncssh's key objects themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncssh

PrivateKey = asyncssh.SSHKey  # what SSHPool takes as a client key; opaque to callers
DEFAULT_KEY_TYPE = "ssh-ed25519"


@dataclass(frozen=True)
class KeyPair:
    public: str  # one OpenSSH line: "ssh-ed25519 AAAA… comment" (no trailing newline)
    private: str  # the private key in OpenSSH format, unencrypted (callers encrypt it at rest)


def generate_key_pair(comment: str, key_type: str = DEFAULT_KEY_TYPE) -> KeyPair:
    """A fresh key pair of ``key_type`` with ``comment``, exported in OpenSSH format."""
    key = asyncssh.generate_private_key(key_type, comment=comment)
    return KeyPair(
        public=key.export_public_key("openssh").decode("ascii").strip(),
        private=key.export_private_key("openssh").decode("ascii"),
    )


def load_private_key(text: str) -> PrivateKey:
    """Parse an OpenSSH private key (as :func:`generate_key_pair` exports it) for use as a client key."""
    return asyncssh.import_private_key(text)
