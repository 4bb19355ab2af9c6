"""Pre/post backup commands, run for real over a real sshd session (root) on this machine.

Each test writes to its own temp files through the commands, so order and "did it run" are read back from disk;
no test asserts on timing (the hanging command has a 1 s limit and the test waits for its process to be gone).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from bot.backup.hooks import (
    DEFAULT_TIMEOUT,
    HookCommand,
    PostCommandsFailed,
    PreCommandFailed,
    backup_hooks,
    parse_commands,
)


def append(log: Path, word: str) -> HookCommand:
    """A command that appends ``word`` to ``log`` (an argument list: the word and path never meet a shell)."""
    return HookCommand(("sh", "-c", 'printf "%s\\n" "$1" >> "$2"', "sh", word, os.fspath(log)))


def lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def failing(status: int, message: str) -> HookCommand:
    return HookCommand(("sh", "-c", f'echo "first line" >&2; echo "{message}" >&2; exit {status}'))


async def test_commands_run_in_order_around_the_body(sshd_host, ctx_for, tmp_path) -> None:
    log = tmp_path / "log"
    pre = [append(log, "pre1"), append(log, "pre2")]
    async with backup_hooks(ctx_for(sshd_host), pre, [append(log, "post1"), append(log, "post2")]) as record:
        assert lines(log) == ["pre1", "pre2"]
        log.open("a").write("body\n")
    assert lines(log) == ["pre1", "pre2", "body", "post1", "post2"]
    assert [(r.phase, r.status, r.exit_status) for r in record.results] == [
        ("pre", "ok", 0), ("pre", "ok", 0), ("post", "ok", 0), ("post", "ok", 0),
    ]  # fmt: skip
    assert record.results[0].argv == pre[0].argv and all(r.duration >= 0 for r in record.results)


async def test_failing_pre_command_stops_the_run_and_post_still_runs(sshd_host, ctx_for, tmp_path) -> None:
    log = tmp_path / "log"
    pre = [append(log, "pre1"), failing(3, "cannot stop app: unit not loaded"), append(log, "never")]
    with pytest.raises(PreCommandFailed) as err:
        async with backup_hooks(ctx_for(sshd_host), pre, [append(log, "post")]):
            pytest.fail("the backup must not run after a failed pre-command")
    assert lines(log) == ["pre1", "post"]  # the third pre-command did not run; the post-command did
    assert str(err.value) == (
        'The backup did not run: the pre-backup command `echo "first line" >&2; echo "cannot stop app: unit not '
        'loaded" >&2; exit 3` exited with status 3: cannot stop app: unit not loaded.'
    )
    assert err.value.kind == "hook_failed" and err.value.hint
    assert err.value.result.stderr_tail == "first line\ncannot stop app: unit not loaded"
    assert [r.status for r in err.value.record.results] == ["ok", "failed", "ok"]


async def test_hanging_pre_command_times_out_and_is_stopped(sshd_host, ctx_for, tmp_path) -> None:
    log, pidfile = tmp_path / "log", tmp_path / "pid"
    hang = HookCommand(("sh", "-c", 'echo $$ > "$1"; exec sleep 60', "sh", os.fspath(pidfile)), timeout=1)
    with pytest.raises(PreCommandFailed) as err:
        async with backup_hooks(ctx_for(sshd_host), [hang], [append(log, "post")]):
            pytest.fail("the backup must not run")
    assert err.value.result.status == "timeout"
    assert "did not finish within its time limit and was stopped" in str(err.value)
    assert lines(log) == ["post"]
    pid = int(pidfile.read_text())
    assert await asyncio.to_thread(_gone_within, pid, 15), "the hanging command is still running on the server"


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether the process ends within ``seconds`` (the transport stops it on a second channel, asynchronously)."""
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_post_runs_after_the_body_failed_and_a_failing_post_does_not_hide_its_error(
    sshd_host, ctx_for, tmp_path
) -> None:
    log = tmp_path / "log"
    post = [failing(7, "could not start app"), append(log, "post2")]
    with pytest.raises(ValueError, match="borg failed") as err:
        async with backup_hooks(ctx_for(sshd_host), [append(log, "pre")], post):
            raise ValueError("borg failed")
    assert lines(log) == ["pre", "post2"]  # every post-command ran, also after the first one failed
    assert err.value.__notes__ == [
        'Afterwards, the post-backup command `echo "first line" >&2; echo "could not start app" >&2; exit 7` exited '
        "with status 7: could not start app."
    ]


async def test_post_runs_after_cancellation(sshd_host, ctx_for, tmp_path) -> None:
    log = tmp_path / "log"
    started = asyncio.Event()

    async def run() -> None:
        async with backup_hooks(ctx_for(sshd_host), [append(log, "pre")], [append(log, "post")]):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert lines(log) == ["pre", "post"]


async def test_failing_post_after_a_good_backup_is_reported(sshd_host, ctx_for, tmp_path) -> None:
    log = tmp_path / "log"
    with pytest.raises(PostCommandsFailed) as err:
        async with backup_hooks(ctx_for(sshd_host), [], [failing(1, "reload failed"), append(log, "post2")]):
            pass
    assert lines(log) == ["post2"]
    assert str(err.value).startswith('The backup finished, but the post-backup command `echo "first line"')
    assert str(err.value).endswith("exited with status 1: reload failed.")
    assert [r.status for r in err.value.record.phase("post")] == ["failed", "ok"]


async def test_stored_forms_run_as_documented(sshd_host, ctx_for, tmp_path) -> None:
    """A stored string runs through ``sh -c`` (the operator's shell line); an argument list reaches the program
    verbatim, shell characters included."""
    out = tmp_path / "out"
    commands = parse_commands(
        [f"echo $((40 + 2)) > {out}", ["touch", f"{tmp_path}/$(not a command); rm -rf x"]], field="pre"
    )
    assert commands[0].via_shell and not commands[1].via_shell
    async with backup_hooks(ctx_for(sshd_host), commands):
        pass
    assert out.read_text() == "42\n"
    assert (tmp_path / "$(not a command); rm -rf x").exists()


def test_parse_commands() -> None:
    assert parse_commands(None) == ()
    (argv, obj, line) = parse_commands(
        [["sync"], {"argv": ["systemctl", "stop", "app"], "timeout": 30, "privileged": True}, "pg_ctl reload"],
        field="pre_backup_commands",
    )
    assert argv == HookCommand(("sync",), DEFAULT_TIMEOUT, False, False)
    assert obj == HookCommand(("systemctl", "stop", "app"), 30.0, True, False)
    assert line == HookCommand(("sh", "-c", "pg_ctl reload"), DEFAULT_TIMEOUT, False, True)
    assert parse_commands(["sync"]) == (HookCommand(("sh", "-c", "sync"), via_shell=True),)  # a string entry
    for value in ("sync", ("sync",), {"argv": ["sync"]}):
        with pytest.raises(ValueError, match="must be a list of commands"):
            parse_commands(value)
    for entry, words in (
        ([], r"commands\[0\]: a command must be a non-empty list"),
        (["a\0b"], "NUL"),
        ([1], "not text"),
        ("  ", "empty command"),
        ({"argv": ["x"], "timeout": 0}, "timeout"),
        ({"argv": ["x"], "timeout": True}, "timeout"),
        ({"argv": ["x"], "privileged": "yes"}, "privileged"),
        ({"argv": ["x"], "shell": True}, "may have only"),
        (3, "a list of arguments"),
    ):
        with pytest.raises(ValueError, match=words):
            parse_commands([entry])
