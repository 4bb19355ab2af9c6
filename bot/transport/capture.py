"""Reading a command's stdout and stderr into memory with a cap, so no server can grow the bot without bound.

A server decides how much it prints; the bot decides how much it keeps. Both transports read in chunks of
:data:`CHUNK` bytes (never "everything until EOF"), and:

- stdout, and stderr read whole, stop at ``limit`` bytes: the reader raises :class:`OutputExceeded`, the
  transport stops the command and returns a result that says so (``CommandResult.overflow``);
- stderr handed line by line to a handler (borg's ``--log-json`` progress of a long backup) is not a reason to stop
  a command: every line reaches the handler (cut at :data:`LINE_LIMIT`), and only the last ``limit`` bytes are kept.

Database dumps never pass through here: they stream from the dump program into borg on the server itself
(``borg create --content-from-command``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Iterator
from contextvars import ContextVar
from typing import Any

from bot.transport.base import CommandResult

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
LINE_LIMIT = 64 * 1024  # a longer stderr line reaches the handler cut to this length
MIB = 1024 * 1024
DEFAULT_OUTPUT_LIMIT = 32 * MIB  # any command's captured stdout / stderr
DEFAULT_PROBE_OUTPUT_LIMIT = 4 * MIB  # a probe's: small facts (versions, lists, JSON of a few containers)

PROBE_OUTPUT: ContextVar[bool] = ContextVar("probe_output", default=False)
"""True while a probe runs its commands: transports then apply their (small) probe output limit."""


@contextlib.contextmanager
def probe_output() -> Iterator[None]:
    """Within this block, commands capture at most the transport's probe output limit."""
    token = PROBE_OUTPUT.set(True)
    try:
        yield
    finally:
        PROBE_OUTPUT.reset(token)


def pick_limit(command_limit: int, probe_limit: int) -> int:
    """Given a transport's two limits, return the one for the command about to run (probe or not)."""
    return min(probe_limit, command_limit) if PROBE_OUTPUT.get() else command_limit


def size_text(size: int) -> str:
    """``32 MiB`` / ``4096 bytes``: a limit as people read it."""
    return f"{size / MIB:g} MiB" if size >= MIB and size % (MIB // 4) == 0 else f"{size} bytes"


class OutputExceeded(Exception):
    """A stream passed its limit; the command must be stopped. ``sentence`` says so for people."""

    def __init__(self, stream: str, limit: int) -> None:
        super().__init__(stream, limit)
        self.stream = stream
        self.limit = limit

    def sentence(self, program: str) -> str:
        return (
            f"`{program}` printed more than {size_text(self.limit)} on {self.stream}, the bot's limit for what it "
            "keeps of a command's output, and was stopped"
        )


def stopped_result(
    argv: tuple[str, ...], out: bytes, err: bytes, overflow: OutputExceeded, took: float
) -> CommandResult:
    """The result of a command stopped for printing too much: what was kept, and a sentence (also on stderr, as
    the last line, where callers look for a command's last words)."""
    sentence = overflow.sentence(argv[0] if argv else "?") + "."
    err = err + (b"" if not err or err.endswith(b"\n") else b"\n") + f"backup-bot: {sentence}\n".encode()
    return CommandResult(argv, None, out, err, signal="the bot's output limit", duration=took, overflow=sentence)


class Sink:
    """Chunks kept from one stream: the first ``limit`` bytes (``tail=False``) or the last ``limit`` (``tail=True``)."""

    def __init__(self, limit: int, *, tail: bool = False) -> None:
        self.limit = limit
        self.tail = tail
        self.parts: deque[bytes] = deque()
        self.size = 0

    def add(self, data: bytes) -> bool:
        """Keep ``data`` within the limit; return False when a head sink had to drop some (it is full)."""
        if not self.tail:
            room = self.limit - self.size
            self.parts.append(data[:room])
            self.size += min(len(data), room)
            return len(data) <= room
        self.parts.append(data[-self.limit :])
        self.size += len(self.parts[-1])
        while self.size > self.limit:
            first = self.parts.popleft()
            excess = self.size - self.limit
            if len(first) > excess:
                self.parts.appendleft(first[excess:])
            self.size -= min(len(first), excess)
        return True

    def value(self) -> bytes:
        return b"".join(self.parts)


async def read_capped(stream: Any, sink: Sink, name: str) -> None:
    """Read ``stream`` to EOF into ``sink``; past the sink's limit raise :class:`OutputExceeded`."""
    while chunk := await stream.read(CHUNK):
        if not sink.add(chunk):
            raise OutputExceeded(name, sink.limit)


async def read_lines_capped(stream: Any, sink: Sink, on_line: Any) -> None:
    """Read ``stream`` to EOF, handing each line (cut at :data:`LINE_LIMIT`) to ``on_line`` as it arrives."""
    pending = bytearray()
    cut = False  # the current line passed LINE_LIMIT: drop the rest of it
    while chunk := await stream.read(CHUNK):
        sink.add(chunk)
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if not cut:
                pending += chunk[start:end][: LINE_LIMIT - len(pending)]
            _deliver(on_line, bytes(pending))
            pending.clear()
            cut, start = False, end + 1
        if not cut:
            pending += chunk[start:][: LINE_LIMIT - len(pending)]
            cut = len(pending) >= LINE_LIMIT
    if pending:
        _deliver(on_line, bytes(pending))


def _deliver(on_line: Any, line: bytes) -> None:
    """A failing handler is logged and ignored: progress must never break the command it reports on."""
    try:
        on_line(line.decode("utf-8", errors="replace").rstrip("\r"))
    except Exception:
        log.exception("stderr line handler failed")


async def both(first: Awaitable[None], second: Awaitable[None]) -> None:
    """Run two readers together; the first exception (e.g. :class:`OutputExceeded`) stops the other and is raised
    as it is (not in a group), so callers keep catching transport errors by type."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect(stdout: Any, stderr: Any, on_stderr: Any, limit: int) -> tuple[bytes, bytes, OutputExceeded | None]:
    """Given a running command's two streams, return (stdout, stderr, overflow) read within ``limit`` bytes each.

    ``overflow`` is set when a stream passed the limit: reading stopped there, and the caller stops the command.
    """
    out, err = Sink(limit), Sink(limit, tail=on_stderr is not None)
    errs = read_lines_capped(stderr, err, on_stderr) if on_stderr is not None else read_capped(stderr, err, "stderr")
    try:
        await both(read_capped(stdout, out, "stdout"), errs)
    except OutputExceeded as exc:
        return out.value(), err.value(), exc
    return out.value(), err.value(), None
