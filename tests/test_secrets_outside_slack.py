"""Secrets kept out of Slack (issue 13, deliver 9), on real parts: ``backup-bot credential add|list|remove`` as a real
process against a real sshd and the machine's MariaDB; the wizard's server and database steps offering the
secret-free ways first (the key-install command, detected logins found again after a ``~/.my.cnf`` appears, the
prefilled ``credential add`` command) and saying, on every password input that remains, that Slack keeps it."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

from bot.access import StaticDirectory
from bot.flows.wizard.steps.server import ServerStep
from bot.flows.wizard.steps.source import SourceStep
from bot.flows.wizard.steps.source_common import SLACK_KEEPS_TYPED
from storage import db
from storage.crypto import Keyring, install_keyring
from storage.models import AuditLog, DatabaseCredential
from tests.test_wizard_step_server import confirm, new_server, rendered
from tests.test_wizard_step_server import context as server_context
from tests.test_wizard_step_source import context, fields, probed_server, render

DIRECTORY = StaticDirectory(admins=frozenset({"U1"}))  # the tests' user is a Slack admin (fixture services)
TEAM = "T0001"
BIN = Path(sys.executable).parent / "backup-bot"


def cli(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``backup-bot ARGS`` as a real process; standard input is ``stdin`` (never a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BACKUPBOT_", "DATABASE_URL"))}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=env, input=stdin or "", capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def flat(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    return " ".join((result.stdout + result.stderr).split())


async def _stored(url: str, keys: str) -> tuple[list[DatabaseCredential], list[AuditLog], bytes]:
    install_keyring(Keyring(keys))
    try:
        async with db.database(url, migrate=False):
            rows = await DatabaseCredential.all().order_by("id")
            for row in rows:
                row.revealed = row.password.reveal()  # type: ignore[attr-defined]
            audit = await AuditLog.filter(action__startswith="credential.").order_by("id")
    finally:
        install_keyring(None)
    return rows, audit, Path(url.removeprefix("sqlite://")).read_bytes()


def test_credential_add_tests_the_login_from_the_server_and_stores_it_encrypted(
    tmp_path: Path, make_sshd, mariadb_db, mariadb_user
) -> None:
    login = mariadb_user(mariadb_db)
    initialised = cli(tmp_path, "init")
    assert initialised.returncode == 0, initialised.stderr
    public = next(line for line in initialised.stdout.splitlines() if line.startswith("ssh-ed25519 "))
    host = make_sshd("credhost", nonroot=True)
    host.add_authorized_key(public)
    added = cli(tmp_path, "server", "add", "--team", TEAM, "--name", "db1", "--host", host.host, "--port",
                str(host.port), "--user", host.user, "--fingerprint", host.host_key_fingerprint)  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    base = ["credential", "add", "--team", TEAM, "--server", "db1", "--type", "mysql", "--user", login.user,
            "--host", "127.0.0.1", "--port", str(login.port)]  # fmt: skip

    wrong = cli(tmp_path, *base, "--password-stdin", stdin="BW-wrong-" + login.password + "\n")
    text = flat(wrong)
    assert wrong.returncode == 2 and "rejected the login" in text and "Nothing was stored" in text
    assert login.password not in text
    on_line = cli(tmp_path, *base, "--password", login.password)
    assert on_line.returncode == 2 and "never given on the command line" in flat(on_line)
    assert login.password not in on_line.stdout + on_line.stderr
    no_terminal = cli(tmp_path, *base)
    assert no_terminal.returncode == 2 and "--password-stdin" in flat(no_terminal)
    elsewhere = cli(tmp_path, *base[:5], "db9", *base[6:], "--password-stdin", stdin=login.password)
    assert elsewhere.returncode == 2 and "no server named 'db9'" in flat(elsewhere)

    stored = cli(tmp_path, *base, "--password-stdin", stdin=login.password + "\n")
    text = flat(stored)
    assert stored.returncode == 0, text
    assert f"Stored login 1: {login.user}@127.0.0.1:{login.port}" in text and mariadb_db.name in text
    assert login.password not in text
    listed = json.loads(cli(tmp_path, "credential", "list", "--team", TEAM, "--json").stdout)
    assert [(c["id"], c["server"], c["type"], c["login"], c["test_status"], c["sources"]) for c in listed] == [
        (1, "db1", "mysql", f"{login.user}@127.0.0.1:{login.port}", "success", 0)]
    assert login.password not in json.dumps(listed)

    url = f"sqlite://{tmp_path / 'data' / 'backup-bot.sqlite3'}"
    keys = dotenv_values(tmp_path / ".env")["BACKUPBOT_SECRET_KEYS"]
    rows, audit, raw = asyncio.run(_stored(url, keys))
    assert [r.revealed for r in rows] == [login.password]  # type: ignore[attr-defined]
    assert login.password.encode() not in raw  # encrypted at rest
    assert [(a.action, a.actor, a.details["via"]) for a in audit] == [("credential.store", "cli", "cli")]
    assert login.password not in json.dumps([a.details for a in audit])

    removed = cli(tmp_path, "credential", "remove", "--team", TEAM, "1")
    assert removed.returncode == 0 and "Removed stored login 1" in flat(removed)
    assert json.loads(cli(tmp_path, "credential", "list", "--team", TEAM, "--json").stdout) == []
    help_text = flat(cli(tmp_path, "credential", "add", "--help"))
    assert "--password-stdin" in help_text and "--password " not in help_text.replace("--password-stdin", "")


async def test_database_step_offers_the_secret_free_ways_before_the_password(
    sqlite_db, make_sshd, bot_key, services, mariadb_db, mariadb_user
) -> None:
    login = mariadb_user(mariadb_db)
    host = make_sshd("mysql-nodetect", nonroot=True, client_key=bot_key[0])  # no socket root: nothing detected
    server = await probed_server(host, services)
    step, ctx = SourceStep(), context(services, server, "mysql")
    view = await step.view(ctx)
    [note] = [n for n in view.notes if "keep the password out of Slack" in n]
    command = f"backup-bot credential add --team {TEAM} --server {server.name} --type mysql --user USER --port 3306"
    assert f"```{command}```" in note and "~/.my.cnf" in note and "Look for logins again" in note
    assert SLACK_KEEPS_TYPED in fields(view)["db_password"].hint
    assert [b.action for b in view.buttons] == ["test_connection", "detect_logins"]
    blocks = render(view)["blocks"]
    where = [i for i, b in enumerate(blocks) if command in json.dumps(b)]
    password_at = [i for i, b in enumerate(blocks) if b.get("block_id") == "db_password"]
    assert where and password_at and where[0] < password_at[0]  # the secret-free ways come first

    still = await step.act(ctx, "detect_logins", "")
    assert still.startswith(":x: Still no MySQL/MariaDB login") and "~/.my.cnf" in still
    cnf = host.home / ".my.cnf"
    cnf.write_text(f"[client]\nuser={login.user}\npassword={login.password}\nhost=127.0.0.1\nport={login.port}\n")
    cnf.chmod(0o600)
    owner = pwd.getpwnam(host.user)
    os.chown(cnf, owner.pw_uid, owner.pw_gid)  # the login user's own file, as its owner would write it
    found = await step.act(ctx, "detect_logins", "")
    assert found.startswith(":white_check_mark: Found the login in ~/.my.cnf") and login.password not in found
    again = await step.view(ctx)
    assert fields(again)["credential"].initial == "detected"
    assert [b.action for b in again.buttons] == ["test_connection"]
    assert any("Detected on the server: the login in ~/.my.cnf" in n for n in again.notes)
    await step.act(ctx, "test_connection", "")
    assert await DatabaseCredential.filter(server_id=server.id).count() == 0  # nothing typed, nothing stored


async def test_key_install_command_comes_before_the_one_time_password(
    sqlite_db, make_sshd, bot_key, services
) -> None:
    host = make_sshd("nokey2", client_key=bot_key[0], authorize_client=False)
    step, ctx = ServerStep(), server_context(services)
    await step.submit(ctx, new_server(host))
    await confirm(step, ctx, host.host_key_fingerprint)
    view = await step.view(ctx)
    password = next(f for f in view.fields if f.name == "password")
    assert SLACK_KEEPS_TYPED in password.hint and "Only if you cannot run the command above" in password.hint
    assert any("no password goes through Slack" in n and bot_key[1] in n for n in view.notes)
    blocks = rendered(view)["blocks"]
    command_at = next(i for i, b in enumerate(blocks) if bot_key[1] in json.dumps(b))
    password_at = next(i for i, b in enumerate(blocks) if b.get("block_id") == "password")
    assert command_at < password_at
