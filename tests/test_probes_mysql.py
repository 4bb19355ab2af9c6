"""The MySQL/MariaDB probe: parsers on recorded output, discovery and facts against the machine's real MariaDB
reached through real sshd hosts (root and a throwaway non-root login)."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.probes import mysql
from bot.probes.atomicity import verdict
from bot.probes.base import Absent, ProbeContext, ProbeError
from bot.probes.mysql import MySQLCredential
from bot.transport import LocalTransport
from tests.harness.common import unique_token

RECORDED = Path(__file__).parent / "data" / "probes"
NASTY = "p\"w'#; $(touch {canary}) \\ `touch {canary}` end "
ODD_NAME_PREFIX = "bw \"q\" 'x'; drop "


def error_blocks(name: str) -> list[tuple[str, str]]:
    """``(expected kind, stderr)`` pairs of a recorded ``=== kind`` file."""
    chunks = (RECORDED / name).read_text().split("=== ")[1:]
    return [(kind.strip(), body.rstrip("\n")) for kind, _, body in (c.partition("\n") for c in chunks)]


def mariadb_admin(sql: str) -> str:
    """SQL as the machine's MariaDB root (socket; the harness's own helpers are private)."""
    proc = subprocess.run(
        ["mariadb", "--no-defaults", "-u", "root", "--batch", "--skip-column-names", "-e", sql],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return proc.stdout


def exists(*paths: str) -> bool:
    return any(os.path.exists(path) for path in paths)


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@pytest.fixture
def odd_database(mariadb_db) -> Iterator[str]:
    """A database whose name has quotes, a space and ``;``, with a MyISAM and an InnoDB table."""
    name = ODD_NAME_PREFIX + unique_token()
    mariadb_admin(f"CREATE DATABASE {quoted(name)}")
    try:
        mariadb_admin(
            f"CREATE TABLE {quoted(name)}.legacy (id INT) ENGINE=MyISAM; "
            f"CREATE TABLE {quoted(name)}.orders (id INT PRIMARY KEY) ENGINE=InnoDB"
        )
        yield name
    finally:
        mariadb_admin(f"DROP DATABASE IF EXISTS {quoted(name)}")


def write_home_file(host, name: str, text: str, mode: int = 0o600) -> Path:
    """A file in the sshd login user's home, owned by that user (as they would have it)."""
    path = Path(host.home) / name
    path.write_text(text)
    entry = pwd.getpwnam(host.user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(mode)
    return path


# --- parsers on recorded output ------------------------------------------------------------------------------


def test_debian_cnf_formats_give_the_login_without_showing_the_password() -> None:
    legacy = mysql.credential_from_option_file((RECORDED / "mysql_debian_cnf_legacy.txt").read_text(), "debian.cnf")
    assert legacy is not None
    assert (legacy.user, legacy.host, legacy.socket) == ("debian-sys-maint", "localhost", "/var/run/mysqld/mysqld.sock")
    assert legacy.password is not None and legacy.password.get_secret_value() == "Xk3pL9qZr2WvT8sA"
    for shown in (repr(legacy), str(legacy), legacy.model_dump_json()):
        assert "Xk3pL9qZr2WvT8sA" not in shown
    modern = mysql.credential_from_option_file(
        (RECORDED / "mysql_debian_cnf_mariadb1011.txt").read_text(), "debian.cnf"
    )
    assert modern is not None and (modern.user, modern.host, modern.password) == ("root", "localhost", None)
    assert mysql.credential_from_option_file("[mysqld]\nuser = mysql\n", "my.cnf") is None


def test_option_file_values_quote_and_unquote() -> None:
    values = mysql.parse_option_file('[client]\nuser = app # comment\npassword = "a b#c\\"d"\n[mysql]\nuser = other\n')
    assert values == {"user": "app", "password": 'a b#c"d'}
    for password in (NASTY.format(canary="/x"), "", " lead", "#", '"', "\\"):
        text = mysql.option_file_text(MySQLCredential(source="given", password=SecretStr(password)))
        assert mysql.parse_option_file(text)["password"] == password
    with pytest.raises(ProbeError) as info:
        mysql.option_file_text(MySQLCredential(source="given", password=SecretStr("two\nlines-SECRET")))
    assert "SECRET" not in str(info.value)


def test_server_output_parser_on_recorded_mariadb_output() -> None:
    text = (RECORDED / "mysql_info_mariadb1011.txt").read_text()
    server = mysql.parse_info(text)
    assert (server.flavour, server.version, server.datadir) == (
        "mariadb",
        "10.11.19-MariaDB-0+deb12u1",
        "/var/lib/mysql/",
    )
    assert server.databases == ('shop "main"; x', "test", "wiki")
    found = {(t.database, t.table, t.engine) for t in server.non_transactional}
    assert found == {
        ('shop "main"; x', "cache", "MEMORY"),
        ('shop "main"; x', "legacy\tlog", "MyISAM"),
        ("wiki", "pages", "Aria"),
    }
    assert set(server.non_transactional_by_database) == {'shop "main"; x', "wiki"}
    with_system = mysql.parse_info(text, include_system=True)
    assert {"mysql", "sys", "information_schema"} <= set(with_system.databases)
    assert any(t.database == "mysql" and t.engine == "CSV" for t in with_system.non_transactional)


@pytest.mark.parametrize("garbage", ["", "hello world\n", "server\tonly-two\nend\n", "server\ta\tb\tc\td\n"])
def test_server_output_parser_refuses_garbage(garbage: str) -> None:
    with pytest.raises(ProbeError, match="MySQL"):
        mysql.parse_info(garbage)


@pytest.mark.parametrize("recorded", ["mysql_errors_mariadb1011.txt", "mysql_errors_oracle_public.txt"])
def test_client_errors_are_classified(recorded: str) -> None:
    for kind, stderr in error_blocks(recorded):
        assert mysql.classify_error(stderr) == kind, stderr
    assert mysql.classify_error("Segmentation fault") == "other"


def test_flavour_and_batch_unescaping() -> None:
    assert mysql.flavour_of("8.0.36", "MySQL Community Server - GPL") == "mysql"
    assert mysql.flavour_of("8.0.35-27", "Percona Server (GPL), Release 27") == "percona"
    assert mysql.flavour_of("11.4.2-MariaDB-log", "mariadb.org binary distribution") == "mariadb"
    assert mysql.unescape_batch("a\\tb\\nc\\\\d\\0e\\x") == "a\tb\nc\\d\x00e\\x"


async def test_missing_client_is_absent(tmp_path: Path) -> None:
    (tmp_path / "sh").symlink_to("/bin/sh")
    ctx = ProbeContext(LocalTransport(), env={"PATH": str(tmp_path)})
    with pytest.raises(Absent):
        await mysql.probe(ctx)


# --- the real server through sshd ----------------------------------------------------------------------------


async def test_root_login_reports_debian_cnf_then_uses_socket_authentication(make_sshd, ctx_for, mariadb_db) -> None:
    host = make_sshd("mysql-root")
    info = await mysql.probe(ctx_for(host))
    debian, my_cnf = info.attempts[0], info.attempts[1]
    assert (debian.source, my_cnf.source) == ("debian.cnf", "my.cnf")
    if not exists(mysql.DEBIAN_CNF):  # Debian 12's MariaDB no longer creates it on a fresh install
        assert not debian.found and debian.note == "/etc/mysql/debian.cnf does not exist."
    if exists(mysql.DEBIAN_CNF, "/root/.my.cnf"):
        pytest.skip("this machine has a real debian.cnf or /root/.my.cnf: the socket step is not reached")
    assert not my_cnf.found and my_cnf.note == "~/.my.cnf does not exist."
    assert info.credential is not None and info.credential.source == "socket" and info.credential.as_root
    assert info.running and info.server is not None
    real_version, real_datadir = mariadb_admin("SELECT @@version, @@datadir").strip().split("\t")
    assert (info.server.flavour, info.server.version, info.server.datadir) == ("mariadb", real_version, real_datadir)
    assert mariadb_db.name in info.server.databases and "mysql" not in info.server.databases
    assert info.client in ("mariadb", "mysql") and "Distrib" in info.client_version


async def test_login_user_my_cnf_is_found_and_used(make_sshd, ctx_for, mariadb_db, mariadb_user) -> None:
    login = mariadb_user(mariadb_db, password="pa ss#word")
    host = make_sshd("mysql-mycnf", nonroot=True)
    write_home_file(host, ".my.cnf", f'[client]\nuser = {login.user}\npassword = "pa ss#word"\n')
    info = await mysql.probe(ctx_for(host))
    sources = [(a.source, a.found, a.ok) for a in info.attempts]
    assert sources == [("debian.cnf", False, False), ("my.cnf", True, True)]
    assert info.credential is not None and info.credential.user == login.user
    assert info.server is not None and info.server.current_user.startswith(login.user + "@")
    assert info.server.databases == (mariadb_db.name,)  # the user sees only what it was granted


async def test_given_login_comes_last_and_survives_a_nasty_password(
    make_sshd, ctx_for, mariadb_db, mariadb_user, tmp_path: Path
) -> None:
    canary = tmp_path / "CANARY"
    password = NASTY.format(canary=canary)
    login = mariadb_user(mariadb_db, password=password)
    host = make_sshd("mysql-given", nonroot=True)
    given = MySQLCredential(source="given", user=login.user, password=SecretStr(password), host="127.0.0.1", port=3306)
    info = await mysql.probe(ctx_for(host), given)
    assert [a.source for a in info.attempts] == ["debian.cnf", "my.cnf", "socket", "given"]
    assert [a.ok for a in info.attempts] == [False, False, False, True]
    assert "needs root" in info.attempts[2].note
    assert info.credential is not None and info.credential.source == "given"
    assert info.server is not None and info.server.databases == (mariadb_db.name,)
    assert not canary.exists()


async def test_wrong_password_is_a_precise_failure_and_stays_secret(
    make_sshd, ctx_for, mariadb_db, mariadb_user
) -> None:
    login = mariadb_user(mariadb_db)
    secret = "BW-SECRET-" + unique_token()
    host = make_sshd("mysql-wrong", nonroot=True)
    write_home_file(host, ".my.cnf", f"[client]\nuser = {login.user}\npassword = {secret}-stale\n")
    given = MySQLCredential(source="given", user=login.user, password=SecretStr(secret), host="127.0.0.1")
    info = await mysql.probe(ctx_for(host), given)
    assert info.credential is None and info.server is None and info.running
    failed = [a for a in info.attempts if a.found]
    assert [(a.source, a.failure) for a in failed] == [("my.cnf", "auth_failed"), ("given", "auth_failed")]
    assert "rejected the login" in failed[-1].note and "1045" in failed[-1].note
    assert "no login was found" in info.note
    for shown in (repr(info), str(info), info.model_dump_json(), *(a.note for a in info.attempts)):
        assert secret not in shown


async def test_stale_my_cnf_falls_through_to_the_given_login(make_sshd, ctx_for, mariadb_db, mariadb_user) -> None:
    login = mariadb_user(mariadb_db)
    host = make_sshd("mysql-stale", nonroot=True)
    write_home_file(host, ".my.cnf", f"[client]\nuser = {login.user}\npassword = not-the-password\n")
    given = MySQLCredential(source="given", user=login.user, password=SecretStr(login.password), host="127.0.0.1")
    info = await mysql.probe(ctx_for(host), given)
    assert info.attempts[1].failure == "auth_failed" and info.credential is not None
    assert info.credential.source == "given" and info.server is not None


async def test_myisam_table_in_an_odd_database_name_is_non_transactional(make_sshd, ctx_for, odd_database) -> None:
    host = make_sshd("mysql-myisam")
    info = await mysql.probe(ctx_for(host))
    assert info.server is not None and odd_database in info.server.databases
    tables = info.server.non_transactional_by_database[odd_database]
    assert [(t.table, t.engine) for t in tables] == [("legacy", "MyISAM")]  # orders is InnoDB: not listed
    only_odd = verdict(info, None, databases=[odd_database])
    assert not only_odd.atomic and only_odd.method == "none" and "MyISAM (1)" in only_odd.reason
    assert verdict(info, "lvm", databases=[odd_database]).method == "snapshot"


async def test_refused_given_login_is_reported_while_the_default_server_answers(make_sshd, ctx_for) -> None:
    host = make_sshd("mysql-down", nonroot=True)
    given = MySQLCredential(source="given", user="nobody", password=SecretStr("x"), host="127.0.0.1", port=1)
    info = await mysql.probe(ctx_for(host), given)
    assert info.attempts[-1].failure == "refused" and "Nothing accepts MySQL connections at 127.0.0.1:1" in (
        info.attempts[-1].note
    )
    # This machine's MariaDB answers on the default socket (access denied for the login's system user), so the
    # probe says it runs but no login works, rather than "not running".
    assert info.running and info.credential is None and "no login was found" in info.note


async def test_a_client_printing_garbage_is_a_probe_error(make_sshd, ctx_for) -> None:
    """A stand-in ``mariadb`` first on the sshd host's PATH answers the query with something else."""
    host = make_sshd("mysql-garbage")
    fake = Path(host.workdir) / "bin" / "mariadb"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'mariadb  Ver 15.1'; exit 0; }\necho 'Welcome!'\n")
    fake.chmod(0o755)
    with pytest.raises(ProbeError, match="printed something unexpected"):
        await mysql.probe(ctx_for(host))
