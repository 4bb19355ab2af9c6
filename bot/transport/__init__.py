"""Running commands on servers: over SSH (asyncssh, pinned host keys) or on the bot's own host.

Both transports take an argument list, never a command string, and return a :class:`CommandResult`.
Nothing here imports Slack or the ORM: callers pass plain values (a :class:`SSHTarget`, a private key).
"""

from bot.transport.base import (
    AuthenticationFailed,
    CommandResult,
    CommandTimeout,
    ConnectTimeout,
    HostKeyChanged,
    HostKeyNotPinned,
    HostUnreachable,
    PoolBusy,
    Transport,
    TransportError,
)
from bot.transport.capture import probe_output
from bot.transport.keys import KeyPair, PrivateKey, generate_key_pair, load_private_key
from bot.transport.local import LocalTransport
from bot.transport.ssh import PoolLimits, SSHPool, SSHTarget, SSHTransport

__all__ = [
    "AuthenticationFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectTimeout",
    "HostKeyChanged",
    "HostKeyNotPinned",
    "HostUnreachable",
    "KeyPair",
    "LocalTransport",
    "PoolBusy",
    "PoolLimits",
    "PrivateKey",
    "SSHPool",
    "SSHTarget",
    "SSHTransport",
    "Transport",
    "TransportError",
    "generate_key_pair",
    "load_private_key",
    "probe_output",
]
