"""The first five minutes, as a new operator lives them: every bad input is one sentence, nothing hangs, a signal
always stops the bot, logs are quiet and never hold a secret, set-up alone succeeds (issue 11, part 5).

Each case runs the real ``backup-bot`` as a process, with a temporary data directory and settings file; Slack is
the project's emulator (or a port that accepts connections and never answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.cli.logs import setup_logging
from bot.probes.dbcheck import redact
from bot.slack.emulator import DEFAULT_APP_TOKEN, DEFAULT_BOT_TOKEN, SlackEmulator
from storage.redact import mask
from tests.harness.common import IN_CI

BIN = Path(sys.executable).parent / "backup-bot"
REPO = Path(__file__).resolve().parent.parent
SETTINGS = ("SLACK_", "BACKUPBOT_", "DATABASE_URL")
STOP_BOUND = 30.0  # seconds a signalled `run` may take before the test calls it a hang (the bot needs ~1 s)


@dataclass
class Outcome:
    returncode: int
    out: str  # stdout and stderr together

    @property
    def lines(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.strip()]


def _env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS)}
    return {**base, "COLUMNS": "400", **extra}


async def cli(cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> Outcome:
    """Run ``backup-bot ARGS`` to its end (a bound turns a hang into a failure, never into a stuck suite)."""
    process = await asyncio.create_subprocess_exec(
        str(BIN), *args, cwd=cwd, env=_env(env or {}), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(stdin), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"backup-bot {' '.join(args)} hung (killed after 120 s)")
    return Outcome(process.returncode or 0, out.decode())


def assert_one_sentence(outcome: Outcome, *fragments: str) -> None:
    """Non-zero exit, exactly one line of output (the error), no traceback, naming what to fix."""
    assert outcome.returncode != 0, outcome.out
    assert "Traceback" not in outcome.out, outcome.out
    assert len(outcome.lines) == 1, outcome.out
    assert outcome.lines[0].startswith("error: "), outcome.out
    for fragment in fragments:
        assert fragment in outcome.out, outcome.out


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ``.env`` (secret key, short lease) and a data directory made by a real ``init``."""
    home = tmp_path_factory.mktemp("first-minutes")
    result = subprocess.run([str(BIN), "init"], cwd=home, env=_env({}), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    with (home / ".env").open("a") as env:
        env.write("BACKUPBOT_RUN_LEASE_SECONDS=3\nBACKUPBOT_HTTP_HOST=127.0.0.1\n")
    return home


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    async with SlackEmulator() as emulator:
        yield emulator


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def slack_env(emulator: SlackEmulator, app_token: str = DEFAULT_APP_TOKEN) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN,
        "SLACK_APP_TOKEN": app_token,
        "SLACK_API_URL": emulator.api_url,
        "BACKUPBOT_HTTP_PORT": str(free_port()),
    }


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A port that accepts connections and never answers: Slack unreachable in the worst way (no error, no reply).
    Yields its API URL and an event set at the first connection."""
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        connected.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/", connected
    finally:
        for writer in held:
            writer.close()
        server.close()


async def start_run(cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN), "run", cwd=cwd, env=_env(env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


async def stop_within_bound(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> Outcome:
    """Send ``sig`` and collect the output; a process still alive after the bound is a failure (and is killed)."""
    process.send_signal(sig)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), STOP_BOUND)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"`backup-bot run` ignored signal {sig}: still running {STOP_BOUND:.0f} s later")
    return Outcome(process.returncode if process.returncode is not None else -1, out.decode())


async def until(condition, what: str, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``condition()`` holds (polling), or fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------------- Slack tokens, signals


async def test_a_wrong_app_token_is_one_sentence_not_a_retry_loop(initialised: Path, slack: SlackEmulator) -> None:
    outcome = await cli(initialised, "run", env=slack_env(slack, app_token="xapp-1-wrong-but-well-formed"))
    assert_one_sentence(outcome, "SLACK_APP_TOKEN was refused", "invalid_auth", "App-Level Tokens")
    assert outcome.returncode == 2
    assert len(slack.calls_to("apps.connections.open")) == 1  # asked once, not every 10 seconds


async def test_a_bot_token_in_place_of_the_app_token_is_named(initialised: Path, slack: SlackEmulator) -> None:
    """Slack answers not_allowed_token_type when apps.connections.open gets a token of another kind."""
    slack.add_bot_token("xapp-registered-as-a-bot-token")
    outcome = await cli(initialised, "run", env=slack_env(slack, app_token="xapp-registered-as-a-bot-token"))
    assert_one_sentence(outcome, "SLACK_APP_TOKEN was refused", "not an app-level token", "not_allowed_token_type")
    assert "xapp-registered-as-a-bot-token" not in outcome.out


async def test_sigterm_stops_a_run_stuck_on_socket_mode(initialised: Path, slack: SlackEmulator) -> None:
    """apps.connections.open keeps failing (Slack down): slack_sdk retries forever; SIGTERM still stops the bot."""
    slack.inject("apps.connections.open", status=500, times=10_000)
    process = await start_run(initialised, slack_env(slack))
    await until(lambda: len(slack.calls_to("apps.connections.open")) >= 2, "the run retried Socket Mode")
    outcome = await stop_within_bound(process)
    assert outcome.returncode == 0, outcome.out
    assert "Traceback" not in outcome.out, outcome.out
    assert "Stopped." in outcome.out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_a_run_waiting_on_a_silent_slack(initialised: Path, sig: int) -> None:
    """The Web API accepts the connection and never answers (auth.test waits for its timeout, then retries)."""
    async with silent_server() as (url, connected):
        process = await start_run(initialised, {**slack_env_for(url), "BACKUPBOT_HTTP_PORT": str(free_port())})
        await asyncio.wait_for(connected.wait(), 60)
        outcome = await stop_within_bound(process, sig)
    assert outcome.returncode == 0, outcome.out
    assert "Traceback" not in outcome.out, outcome.out


def slack_env_for(url: str) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": DEFAULT_BOT_TOKEN, "SLACK_APP_TOKEN": DEFAULT_APP_TOKEN, "SLACK_API_URL": url}


async def test_a_serving_run_stops_cleanly_and_its_log_is_quiet(initialised: Path, slack: SlackEmulator) -> None:
    """At INFO: the bot's own lines only (no asyncssh, slack_bolt or Tortoise chatter), no secret; SIGTERM stops it
    cleanly, a second signal is not needed."""
    env = slack_env(slack)
    process = await start_run(initialised, env)
    await slack.socket.wait_connected(within=60)
    await asyncio.sleep(1.0)  # let the scheduler and the worker start and log whatever they log
    outcome = await stop_within_bound(process)
    assert outcome.returncode == 0, outcome.out
    assert "Connected to Slack workspace" in outcome.out, outcome.out
    for chatter in (" INFO slack_bolt", " INFO slack_sdk", " INFO tortoise", " INFO asyncssh", " INFO aiohttp"):
        assert chatter not in outcome.out, outcome.out
    keys = next(line for line in (initialised / ".env").read_text().splitlines() if "SECRET_KEYS=" in line)
    assert keys.split("=", 1)[1] not in outcome.out


async def test_a_port_in_use_names_the_port_and_the_setting(initialised: Path, slack: SlackEmulator) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = await cli(initialised, "run", env={**slack_env(slack), "BACKUPBOT_HTTP_PORT": str(port)})
    assert_one_sentence(outcome, f"127.0.0.1:{port}", "already in use", "BACKUPBOT_HTTP_PORT")
    assert not slack.calls_to("apps.connections.open")  # refused before connecting to Slack


@pytest.mark.parametrize("url", ["not a url", "htp://slack.com/api/", "http://", "slack.com/api/", "http://h:99999/"])
async def test_a_malformed_slack_api_url_is_refused_at_load(initialised: Path, url: str) -> None:
    outcome = await cli(initialised, "run", env={**slack_env_for(url)})
    assert_one_sentence(outcome, "SLACK_API_URL", "https://slack.com/api/")


# --------------------------------------------------------------------------------------------- data directory, database


@pytest.mark.parametrize("command", ["migrate", "run"])
async def test_a_sqlite_url_in_a_missing_directory_is_one_sentence(tmp_path: Path, initialised: Path,
                                                                   command: str) -> None:  # fmt: skip
    missing = tmp_path / "nonexistent" / "dir"
    env = {"DATABASE_URL": f"sqlite://{missing}/x.sqlite3", **slack_env_for("http://127.0.0.1:9/api/")}
    outcome = await cli(initialised, command, env=env)
    assert_one_sentence(outcome, str(missing), "does not exist", "mkdir -p")
    assert not missing.exists()


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """``directory`` made immutable (chattr +i: even root cannot create files in it), or read-only for a user."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    made = chattr and subprocess.run([chattr, "+i", str(directory)], capture_output=True).returncode == 0
    if not made:
        message = "chattr +i is not available here (e2fsprogs, a file system with attributes)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)  # type: ignore[list-item]


@pytest.mark.parametrize("command", ["migrate", "run"])
async def test_an_immutable_data_directory_is_one_sentence(tmp_path: Path, initialised: Path, command: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"BACKUPBOT_DATA_DIR": str(data), **slack_env_for("http://127.0.0.1:9/api/")}
    with unwritable(data):
        outcome = await cli(initialised, command, env=env)
    assert_one_sentence(outcome, str(data))
    assert list(data.iterdir()) == []


@pytest.mark.parametrize("command", ["migrate", "run"])
@pytest.mark.parametrize("where", ["/proc/backup-bot-test/data", "a-file/data", "a-file"])
async def test_a_data_directory_that_cannot_be_made_is_one_sentence(tmp_path: Path, initialised: Path, command: str,
                                                                    where: str) -> None:  # fmt: skip
    (tmp_path / "a-file").write_text("not a directory")
    data = Path(where) if where.startswith("/") else tmp_path / where
    env = {"BACKUPBOT_DATA_DIR": str(data), **slack_env_for("http://127.0.0.1:9/api/")}
    outcome = await cli(initialised, command, env=env)
    assert_one_sentence(outcome, str(data), "BACKUPBOT_DATA_DIR")


# --------------------------------------------------------------------------------------------- CLI arguments


@pytest.mark.parametrize("command", ["run", "migrate", "doctor", "worker"])
async def test_a_missing_env_file_is_named(tmp_path: Path, command: str) -> None:
    outcome = await cli(tmp_path, "--env-file", str(tmp_path / "missing.env"), command)
    assert_one_sentence(outcome, f"--env-file {tmp_path / 'missing.env'}: no such file", "init")


async def test_init_creates_the_env_file_it_is_given(tmp_path: Path) -> None:
    target = tmp_path / "conf" / "bot.env"
    target.parent.mkdir()
    outcome = await cli(tmp_path, "--env-file", str(target), "init", "--data-dir", str(tmp_path / "data"))
    assert outcome.returncode == 0, outcome.out
    assert "BACKUPBOT_SECRET_KEYS=" in target.read_text()


async def test_a_schedule_preview_at_the_end_of_the_calendar(tmp_path: Path) -> None:
    outcome = await cli(tmp_path, "schedule", "preview", "--tz", "UTC", "--at", "02:00", "--from", "9999-12-31T23:00")
    assert_one_sentence(outcome, "--from", "9999")
    near = await cli(tmp_path, "schedule", "preview", "--tz", "America/New_York", "--window", "23:00-01:00",
                     "--from", "9999-12-20T00:00", "--count", "3")  # fmt: skip
    assert near.returncode == 0, near.out
    assert near.lines == [f"9999-12-{day}T23:00:00-05:00" for day in (20, 21, 22)]


ARCHIVE = b'{"name": "web-2024-05-01", "time": "2024-05-01T03:00:00+02:00"}\n'


async def test_a_keep_within_beyond_the_calendar(tmp_path: Path) -> None:
    outcome = await cli(tmp_path, "retention", "preview", "--keep-within", "10000y", "--archives", "-", stdin=ARCHIVE)
    assert_one_sentence(outcome, "10000y", "shorter interval")


@pytest.mark.parametrize("text", [b"", b"\n\n  \n"])
async def test_empty_retention_input_is_refused(tmp_path: Path, text: bytes) -> None:
    outcome = await cli(tmp_path, "retention", "preview", "--keep-daily", "7", "--archives", "-", stdin=text)
    assert_one_sentence(outcome, "No archives", '"name"')
    (tmp_path / "empty.jsonl").write_bytes(text)
    from_file = await cli(tmp_path, "retention", "preview", "--keep-daily", "7", "--archives", "empty.jsonl")
    assert_one_sentence(from_file, "No archives in empty.jsonl")


async def test_an_archive_time_at_the_calendar_edge(tmp_path: Path) -> None:
    line = b'{"name": "a", "time": "0001-01-01T00:00:00"}\n'
    outcome = await cli(tmp_path, "retention", "preview", "--keep-within", "1y", "--tz", "Europe/Paris",
                        "--archives", "-", stdin=line)  # fmt: skip
    assert_one_sentence(outcome, "Line 1", "UTC offset")


HELP = {
    "init": ("BACKUPBOT_SECRET_KEYS", "--data-dir DIR"),
    "migrate": ("DATABASE_URL", "no options of its own"),
    "run": ("SLACK_APP_TOKEN", "BACKUPBOT_HTTP_PORT", "SIGTERM"),
    "doctor": ("Checks what", "no options of its own"),
    "worker": ("procrastinate", "--concurrency N", "--grace SECONDS"),
    "rotate-key": ("re-encrypt", "--retire-old-keys"),
    "api-token": ("HTTP API", "--team"),
    "approvals": ("approval", "--approvers"),
    "roles": ("admin", "--operator"),
    "audit": ("audit log", "--since"),
    "retention": ("borg prune", "preview"),
    "schedule": ("next start instants", "preview"),
}


@pytest.mark.parametrize("command", sorted(HELP))
async def test_every_subcommand_help_describes_the_command_and_its_options(tmp_path: Path, command: str) -> None:
    outcome = await cli(tmp_path, command, "--help")
    assert outcome.returncode == 0, outcome.out
    usage_end = outcome.out.index("\n\n")
    description = outcome.out[usage_end:outcome.out.index("options:")]
    assert len(description.split()) >= 15, outcome.out  # a real description between the usage and the options
    assert "``" not in outcome.out and ":func:" not in outcome.out and ":mod:" not in outcome.out
    for fragment in HELP[command]:
        assert fragment in outcome.out, outcome.out


# --------------------------------------------------------------------------------------------- masking and logs


def test_masking_keeps_ordinary_words_and_hides_short_values() -> None:
    text = "Can't connect to MySQL server on 'db' port 3306 as user 'p' with password p (p@host)"
    expected = "Can't connect to MySQL server on 'db' port 3306 as user '***' with password *** (***@host)"
    assert mask(text, ["p"]) == expected
    assert redact("password=x; port 3306; xylophone", ["x"]) == "password=***; port 3306; xylophone"
    assert mask("postgres://bob:pw@db/x failed: pw rejected", ["pw"]) == "postgres://bob:***@db/x failed: *** rejected"


def test_masking_hides_long_secrets_everywhere_and_in_url_encoded_form() -> None:
    secret = "s3cr3t-P@ss word"
    text = f"token{secret}glued, quoted '{secret}', url encoded s3cr3t-P%40ss%20word and s3cr3t-P%40ss+word"
    masked = mask(text, [secret])
    assert "s3cr3t" not in masked, masked
    assert masked.count("***") == 4
    assert mask("abcdefgh12345678", ["abcdefgh12345678", "abcdefgh"]) == "***"  # the longer one first, whole


def test_masking_ignores_blank_secrets_and_special_characters_are_literal() -> None:
    assert mask("a port, a pass", ["", "   ", None]) == "a port, a pass"
    assert mask("x .* y", [".*"]) == "x *** y"
    assert mask("dollar $1 in (a|b)", ["(a|b)", "$1"]) == "dollar *** in ***"


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Leave the process's logging as it was after a test that configures it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("asyncssh", "slack_bolt", "tortoise", "aiohttp")}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)


def _capture(level: str, secrets: list[str]) -> io.StringIO:
    setup_logging(level, secrets)
    stream = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    return stream


@pytest.mark.usefixtures("root_logging")
def test_logs_never_show_a_secret_long_or_short() -> None:
    token, password = "xoxb-1234567890-abcdefghij", "q"
    stream = _capture("INFO", [token, password])
    logging.getLogger("bot.runs").info("posting with %s to port 3306 as q", token)
    logging.getLogger("slack_sdk.web").warning("request failed: Authorization Bearer %s", token)
    try:
        raise RuntimeError(f"driver said: password 'q' for {token} refused")
    except RuntimeError:
        logging.getLogger("bot.services").exception("saving failed")
    text = stream.getvalue()
    assert token not in text and "'q'" not in text and " q\n" not in text, text
    assert "port 3306" in text and "as ***" in text  # ordinary words stay readable
    assert "Traceback" in text  # our own exceptions keep their traceback (masked)


@pytest.mark.usefixtures("root_logging")
def test_third_party_loggers_are_quiet_at_info_and_speak_at_debug() -> None:
    stream = _capture("INFO", [])
    logging.getLogger("asyncssh").info("Opening SSH connection to 127.0.0.1")
    logging.getLogger("slack_bolt.AsyncApp").setLevel(logging.INFO)  # bolt sets its loggers' level itself
    logging.getLogger("slack_bolt.AsyncApp").info("A new session has been established")
    logging.getLogger("tortoise").info("Tortoise-ORM shutdown")
    try:
        raise ConnectionError("Slack unreachable")
    except ConnectionError:
        logging.getLogger("slack_bolt.AsyncApp").exception("Failed to connect; Retrying...")
    logging.getLogger("bot.runs.worker").info("run 7 finished")
    text = stream.getvalue()
    assert "Opening SSH" not in text and "new session" not in text and "Tortoise-ORM" not in text, text
    assert "Failed to connect; Retrying..." in text and "Traceback" not in text, text  # one line, no traceback
    assert "run 7 finished" in text
    debug = _capture("DEBUG", [])
    logging.getLogger("asyncssh").info("Opening SSH connection to 127.0.0.1")
    assert "Opening SSH" in debug.getvalue()


# --------------------------------------------------------------------------------------------- scripts/run-bot


def _run_bot(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(project / "scripts" / "run-bot"), *args], cwd=project, env=_env(env or {}),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_run_bot_set_up_alone_exits_0_and_names_the_next_step(tmp_path: Path) -> None:
    """A fresh checkout (the venv already built): set-up alone stops with the next step, exit 0; without Slack tokens
    the plain command starts the playground (and SIGTERM stops it cleanly); with a token it would run the bot."""
    project = tmp_path / "checkout"
    (project / "scripts").mkdir(parents=True)
    for name in ("run-bot", "apt-runtime.txt"):
        shutil.copy(REPO / "scripts" / name, project / "scripts" / name)
    (project / ".venv").symlink_to(Path(sys.executable).parent.parent)
    first = _run_bot(project, "--setup-only")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Next: scripts/run-bot starts the playground" in first.stdout and "SLACK_BOT_TOKEN" in first.stdout
    assert "Traceback" not in first.stdout + first.stderr and first.stderr == "", first.stderr
    assert (project / ".env").exists() and (project / "data").is_dir()
    configured = _run_bot(project, "--setup-only", env={"SLACK_BOT_TOKEN": "xoxb-1"})
    assert configured.returncode == 0 and "starts the bot" in configured.stdout, configured.stdout
    wrong = _run_bot(project, "--bogus")
    assert wrong.returncode == 2 and "--setup-only" in wrong.stderr
    playground = subprocess.Popen(["bash", str(project / "scripts" / "run-bot")], cwd=project,
                                  env=_env({"BACKUPBOT_PLAYGROUND_PORT": "0"}), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = threading.Timer(120, playground.kill)  # a playground that never says its URL fails, never hangs
    deadline.start()
    try:
        lines = []
        for line in playground.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "Playground: http://127.0.0.1:" in line:
                break
        assert any("starting the playground" in x for x in lines), lines
        playground.send_signal(signal.SIGTERM)
        assert playground.wait(timeout=30) == 0
        assert "Traceback" not in playground.stderr.read()  # type: ignore[union-attr]
    finally:
        deadline.cancel()
        if playground.poll() is None:
            playground.kill()
