"""Host keys: fetch a server's key for a person to confirm, fingerprint it like ``ssh-keygen -l``.

Trust on first use is not automatic: the wizard shows the fingerprint returned by :func:`fetch_host_key`
and only a person's confirmation pins it (stores the key line on the Server row). From then on every
connection accepts exactly that key.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import asyncssh

from bot.transport.base import ConnectTimeout, HostUnreachable, TransportError


@dataclass(frozen=True)
class HostKeyInfo:
    key_line: str  # "ssh-ed25519 AAAA…" (no comment)
    fingerprint: str  # "SHA256:…", as `ssh-keygen -lf` prints it
    key_type: str


def parse_key(key_line: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_public_key(key_line)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise TransportError(
            f"The pinned host key is not a valid OpenSSH public key ({exc}).", transient=False
        ) from None


def fingerprint(key_line: str) -> str:
    return parse_key(key_line).get_fingerprint("sha256")


def describe_key(key: asyncssh.SSHKey) -> HostKeyInfo:
    line = key.export_public_key("openssh").decode("ascii").split()
    return HostKeyInfo(key_line=" ".join(line[:2]), fingerprint=key.get_fingerprint("sha256"), key_type=line[0])


async def fetch_host_key(host: str, port: int = 22, *, timeout: float = 15.0) -> HostKeyInfo:
    """The key the server presents (no authentication happens), or a precise reason it could not be read."""
    where = f"{host}:{port}"
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port, config=[]), timeout)
    except TimeoutError:
        raise ConnectTimeout(
            f"{where} did not answer within {timeout:g} s. Check the address, the port and "
            "any firewall between the bot and the server."
        ) from None
    except socket.gaierror:
        raise HostUnreachable(f"The host name {host!r} cannot be resolved. Check its spelling or DNS.") from None
    except ConnectionRefusedError:
        raise HostUnreachable(
            f"Connection to {where} was refused: no SSH server listens there. Check the "
            "port (sshd's Port setting) and that sshd is running."
        ) from None
    except (OSError, asyncssh.Error) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise HostUnreachable(f"Cannot reach an SSH server at {where}: {reason}.") from None
    if key is None:
        raise TransportError(
            f"{where} presented no host key; the bot only talks to servers it can pin.", transient=False
        )
    return describe_key(key)
