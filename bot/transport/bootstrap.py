"""Getting the bot's key onto a server: a line for a person to paste, or one password login.

The password path connects once (to a host key a person has already confirmed), appends the key if it is
not there yet, and forgets the password: it is never stored, logged or put on a command line (the key goes
in as a positional argument of a fixed script, and the password only to the SSH authentication).
"""

from __future__ import annotations

import asyncio
import shlex

import asyncssh

from bot.transport.base import AuthenticationFailed, CommandResult, TransportError
from bot.transport.hostkeys import parse_key
from bot.transport.ssh import SSHTarget

# $1 is the public key line. Idempotent: the key is appended only when the exact line is missing.
_INSTALL_SCRIPT = (
    'umask 077 && mkdir -p "$HOME/.ssh" && touch "$HOME/.ssh/authorized_keys" && '
    '{ grep -qxF -- "$1" "$HOME/.ssh/authorized_keys" || printf "%s\\n" "$1" >> "$HOME/.ssh/authorized_keys"; }'
)


def install_command(public_key: str) -> str:
    """A one-line shell command that installs ``public_key`` for the user who runs it (idempotent)."""
    return f"sh -c {shlex.quote(_INSTALL_SCRIPT)} sh {shlex.quote(public_key.strip())}"


async def install_with_password(
    target: SSHTarget, password: str, public_key: str, *, timeout: float = 20.0
) -> CommandResult:
    """Log in once with ``password`` and install ``public_key``; the password is not kept anywhere."""
    if not target.host_key:
        raise TransportError("Confirm the server's host key fingerprint before sending it a password.", transient=False)
    pinned = parse_key(target.host_key)
    try:
        async with asyncssh.connect(
            target.host,
            target.port,
            username=target.username,
            password=password,
            client_keys=None,
            known_hosts=([pinned], [], []),
            config=[],
            agent_path=None,
            kbdint_auth=False,
            preferred_auth=("password",),
            connect_timeout=timeout,
            login_timeout=timeout,
        ) as conn:
            command = shlex.join(["sh", "-c", _INSTALL_SCRIPT, "sh", public_key.strip()])
            result = await asyncio.wait_for(conn.run(command, check=False, encoding=None), timeout)
    except asyncssh.PermissionDenied:
        raise AuthenticationFailed(
            f"{target.label} refused the password (or does not allow password logins). Check it, or install "
            "the key by hand with the command shown."
        ) from None
    except asyncssh.HostKeyNotVerifiable:
        raise TransportError(
            f"{target.host}:{target.port} presented a host key other than the one confirmed; "
            "the password was not sent.",
            kind="host_key_changed",
            transient=False,
        ) from None
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise TransportError(f"Cannot log in to {target.label} to install the key: {type(exc).__name__}.") from None
    outcome = CommandResult(("sh",), result.exit_status, result.stdout or b"", result.stderr or b"")
    if not outcome.ok:
        raise TransportError(
            f"Installing the key on {target.label} failed: {outcome.describe_failure()}.", transient=False
        )
    return outcome
