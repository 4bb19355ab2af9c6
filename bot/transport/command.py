"""Building the one string a remote shell runs, from an argument list, safely.

Every element is quoted with ``shlex`` (POSIX sh rules, which every login shell we target follows), so a
hostname, path or database name containing spaces, quotes, ``;``, ``$()``, backticks or newlines reaches
the program as one literal argument. Secrets never go into that string: ``secret_env`` values are written
to the command's stdin ahead of its own input and read into the environment by a tiny ``sh`` prologue
(``read`` consumes exactly one line from a pipe, leaving the rest for the program).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

PID_MARKER = "backup-bot-pid="
KILL_AFTER = 5  # seconds between SIGTERM and SIGKILL when a command is stopped
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnsafeArgument(ValueError):
    """An argument or variable that cannot be passed faithfully (NUL bytes, bad names, multi-line secrets)."""


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str | bytes) or not argv:
        raise UnsafeArgument("a command must be a non-empty list of arguments, not a string")
    items = tuple(argv)
    for item in items:
        if not isinstance(item, str):
            raise UnsafeArgument(f"argument {item!r} is not text")
        if "\x00" in item:
            raise UnsafeArgument("an argument contains a NUL byte")
    if "=" in items[0]:
        raise UnsafeArgument("the program name may not contain '='")
    return items


def check_env(env: Mapping[str, str], *, secret: bool) -> None:
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise UnsafeArgument(f"{name!r} is not a valid environment variable name")
        if "\x00" in value or (secret and ("\n" in value or "\r" in value)):
            # Never include the value: it may be a secret.
            raise UnsafeArgument(f"the value of {name} contains a character that cannot be passed")


def shell_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, str] | None = None,
    sudo: bool = False,
    group_timeout: float | None = None,
) -> tuple[str, bytes]:
    """``(command string, stdin preamble)`` for running ``argv`` through a remote login shell.

    ``group_timeout`` (seconds, 0 = unlimited) runs the command under GNU ``timeout``, which puts it in its
    own process group and forwards a SIGTERM it receives to that whole group. Closing an SSH channel does
    not stop a command (there is no tty to hang up), so the command first prints ``backup-bot-pid=<pid>``
    on stderr; ``kill -TERM <pid>`` then stops the command and everything it started.
    """
    parts = list(check_argv(argv))
    if env:
        check_env(env, secret=False)
        parts = ["env", *(f"{k}={v}" for k, v in env.items()), *parts]
    preamble = b""
    if secret_env:
        check_env(secret_env, secret=True)
        names = list(secret_env)
        reads = " && ".join(f"IFS= read -r {n}" for n in names)
        script = f'{reads} && export {" ".join(names)} && exec "$@"'
        parts = ["sh", "-c", script, "sh", *parts]
        preamble = "".join(f"{secret_env[n]}\n" for n in names).encode("utf-8")
    if group_timeout is not None:
        parts = ["timeout", "--signal=TERM", f"--kill-after={KILL_AFTER}", f"{max(group_timeout, 0):g}", *parts]
    if sudo:
        parts = ["sudo", "-n", "--", *parts]
    if group_timeout is None:
        return shlex.join(parts), preamble
    # The login shell announces its pid (which `exec` hands to `timeout`) so a cancelled run can be stopped:
    # sshd ignores "signal" requests for root sessions, so the bot sends `kill` on a second channel instead.
    return f"printf '{PID_MARKER}%s\\n' \"$$\" >&2; exec {shlex.join(parts)}", preamble
