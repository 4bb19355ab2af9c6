"""Wizard step 3 (source) on real parts: sshd hosts reached with the bot's key, the machine's MariaDB and
PostgreSQL, a SQLite database with a keyring (credentials stored encrypted).

What is real: every SSH command (du, findmnt, database clients, snapshot probes), logins and their failures,
the encryption of saved credentials. Two stand-ins, named where used: a ``findmnt`` on one host's PATH that adds
one recorded extra mount to the real list for ``--list`` (this machine has no second real file system below
``/`` outside /tmp and /mnt, which the system source skips anyway), and the Docker facts of the Docker test
(no Docker daemon answers on the sshd hosts; the form and its validation are what is tested there).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tortoise import Tortoise

from bot.access import StaticDirectory
from bot.backup import sources
from bot.flows.wizard.controller import Screen, WizardController
from bot.flows.wizard.services import WizardServices
from bot.flows.wizard.steps.backup_type import BackupTypeStep
from bot.flows.wizard.steps.base import WizardContext
from bot.flows.wizard.steps.server import ServerStep
from bot.flows.wizard.steps.snapshot import SnapshotStep
from bot.flows.wizard.steps.source import SourceStep
from bot.inventory import fetch_host_key, pin_host_key, refresh_capabilities
from bot.probes import docker_models, mongodb
from bot.probes.capabilities import ProbeOutcome
from bot.slack.wizard_render import modal
from storage.models import DatabaseCredential, Server, TestStatus
from storage.tenancy import Tenant
from tests.test_wizard_step_snapshot import Answer

DIRECTORY = StaticDirectory(admins=frozenset({"U1"}))  # the tests' user is a Slack admin (fixture services)

TEAM = "T0001"


async def probed_server(host, services: WizardServices) -> Server:
    """A server as step 1 leaves it: key pinned after confirmation, capabilities probed."""
    server = await Tenant(TEAM).create(Server, name=host.name, host=host.host, port=host.port, username=host.user)
    info = await fetch_host_key(host.host, host.port)
    await pin_host_key(server, info.key_line, info.fingerprint, actor="U1")
    await refresh_capabilities(server, services.pool, services.specs)
    return await Server.get(id=server.id)


def context(services: WizardServices, server: Server, backup_type: str) -> WizardContext:
    data = {"server_id": server.id, "backup_type": backup_type}
    return WizardContext(team_id=TEAM, user_id="U1", session_id="S1", data=data, services=services)


def fields(view) -> dict:
    return {f.name: f for f in view.fields}


def render(view, errors=None, note=None) -> dict:
    return modal(Screen("s", "source", "Source", 3, 10, view, errors or {}, note, slow=True))


# --- files ---------------------------------------------------------------------------------------------------


async def test_files_paths_are_checked_on_the_server_and_measured(
    sqlite_db, make_sshd, bot_key, services, tmp_path: Path
) -> None:
    host = make_sshd("files", client_key=bot_key[0])
    server = await probed_server(host, services)
    step, ctx = SourceStep(), context(services, server, "files")
    view = await step.view(ctx)
    form = fields(view)
    assert form["paths"].kind == "multiline" and form["paths"].initial == "/etc\n/home"
    assert form["flags"].initial == ["exclude_caches"]
    render(view)

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "blob").write_bytes(os.urandom(300_000))
    missing = tmp_path / "not-there"
    assert (await step.submit(ctx, {"paths": "  \n"}))["paths"].startswith("List at least one absolute path")
    assert "must be absolute" in (await step.submit(ctx, {"paths": "relative/dir"}))["paths"]
    assert "may not contain '..'" in (await step.submit(ctx, {"paths": "/srv/../etc"}))["paths"]
    nested = await step.submit(ctx, {"paths": f"{data}\n{data}/sub"})
    assert nested == {"paths": f"{data}/sub is inside {data}, which is already backed up."}
    bad_pattern = await step.submit(ctx, {"paths": str(data), "excludes": "xx:foo"})
    assert "unknown style 'xx'" in bad_pattern["excludes"]
    gone = await step.submit(ctx, {"paths": f"{data}\n{missing}"})
    assert gone == {"paths": f"{missing} does not exist on this server."}
    assert "source" not in ctx.data

    values = {"paths": f"{data}/\n", "excludes": "sh:**/*.tmp", "flags": ["exclude_caches", "one_file_system"]}
    assert await step.submit(ctx, values) == {}
    assert ctx.data["source"] == {"paths": [str(data)], "excludes": ["sh:**/*.tmp"], "one_file_system": True,
                                  "exclude_caches": True}  # fmt: skip
    assert sources.validate("files", ctx.data["source"]) == []
    size = ctx.data["size_estimate"]
    assert size["complete"] and size["total_bytes"] >= 300_000 and size["paths"] == [str(data)]
    assert ctx.data["_snapshot_methods"]["paths"] == [str(data)]  # step 4's options, detected already

    back = await step.view(ctx)  # going back keeps the answers
    form = fields(back)
    assert form["paths"].initial == str(data) and form["excludes"].initial == "sh:**/*.tmp"
    assert sorted(form["flags"].initial) == ["exclude_caches", "one_file_system"]
    assert any("Size:" in n and "KiB" in n for n in back.notes)
    render(back)


# --- system --------------------------------------------------------------------------------------------------

EXTRA_MOUNT = {"target": "/srv/data", "source": "/dev/vdb1", "fstype": "xfs", "size": 21474836480,
               "avail": 10737418240}  # fmt: skip


async def test_system_lists_other_file_systems_once_and_validates_the_choice(
    sqlite_db, make_sshd, bot_key, services
) -> None:
    host = make_sshd("system", client_key=bot_key[0])
    listing = subprocess.run(["findmnt", "-J", "--list", "-b", "-o", "TARGET,SOURCE,FSTYPE,SIZE,AVAIL"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    real = json.loads(listing.stdout)
    real["filesystems"].append(EXTRA_MOUNT)
    recorded = host.workdir / "findmnt-list.json"
    recorded.write_text(json.dumps(real))
    stand_in = host.workdir / "bin" / "findmnt"  # stand-in: the real findmnt, plus one recorded mount for --list
    stand_in.write_text(f'#!/bin/sh\ncase " $* " in *" --list "*) exec cat {recorded} ;; esac\n'
                        'exec /usr/bin/findmnt "$@"\n')  # fmt: skip
    stand_in.chmod(0o755)
    server = await probed_server(host, services)
    step, ctx = SourceStep(), context(services, server, "system")
    view = await step.view(ctx)
    assert fields(view)["flags"].initial == ["exclude_caches", "one_file_system"]
    assert "extra_filesystems" not in fields(view) and any("/proc" in n for n in view.notes)

    first = await step.submit(ctx, {"flags": ["one_file_system", "exclude_caches"]})
    assert "/srv/data (xfs on /dev/vdb1, 20.0 GiB)" in first["extra_filesystems"] and "source" not in ctx.data
    assert [m["target"] for m in ctx.data["_source_mounts"]] == ["/srv/data"]
    offered = fields(await step.view(ctx))["extra_filesystems"]
    assert [o.value for o in offered.options] == ["/srv/data"]
    wrong = await step.submit(ctx, {"flags": ["one_file_system"], "extra_filesystems": ["/srv/other"]})
    assert "not a file system mounted below /" in wrong["extra_filesystems"]
    contradiction = await step.submit(ctx, {"flags": [], "extra_filesystems": ["/srv/data"]})
    assert "only makes sense with one_file_system on" in contradiction["flags"]

    chosen = {"flags": ["one_file_system", "exclude_caches"], "extra_filesystems": ["/srv/data"]}
    assert await step.submit(ctx, chosen) == {}
    assert ctx.data["source"] == {"one_file_system": True, "extra_filesystems": ["/srv/data"], "excludes": [],
                                  "exclude_caches": True}  # fmt: skip
    assert sources.validate("system", ctx.data["source"]) == []
    assert fields(await step.view(ctx))["extra_filesystems"].initial == ["/srv/data"]


# --- MySQL/MariaDB -------------------------------------------------------------------------------------------


async def test_mysql_form_prefilled_from_detection(sqlite_db, make_sshd, bot_key, services, mariadb_db) -> None:
    host = make_sshd("mysql-root", client_key=bot_key[0])
    server = await probed_server(host, services)
    step, ctx = SourceStep(), context(services, server, "mysql")
    view = await step.view(ctx)
    form = fields(view)
    assert form["credential"].initial == "detected" and "local socket" in form["credential"].options[0].label
    assert form["databases"].kind == "multiselect" and form["databases"].initial == ["all"]
    assert f"db:{mariadb_db.name}" in [o.value for o in form["databases"].options]
    assert form["flags"].initial == ["lock_non_transactional"]
    assert any("Consistency" in n for n in view.notes) and view.buttons[0].action == "test_connection"
    render(view)

    empty = await step.submit(ctx, {"credential": "detected", "databases": [], "flags": []})
    assert empty["databases"].startswith("Choose at least one database")
    unknown = await step.submit(ctx, {"credential": "detected", "databases": ["db:no_such_db"]})
    assert "no_such_db: not on this server" in unknown["databases"]
    values = {"credential": "detected", "databases": [f"db:{mariadb_db.name}"], "flags": ["lock_non_transactional"]}
    assert await step.submit(ctx, values) == {}
    assert ctx.data["source"] == {"databases": [mariadb_db.name], "exclude": [], "lock_non_transactional": True}
    assert ctx.data["credential_id"] is None
    verdict = ctx.data["atomicity"]
    assert verdict["atomic"] and verdict["method"] == "transaction" and "InnoDB" in verdict["reason"]
    note = await step.act(ctx, "test_connection", "detected")
    assert note.startswith(":white_check_mark: Logged in with root through the local socket")
    back = fields(await step.view(ctx))
    assert back["databases"].initial == [f"db:{mariadb_db.name}"] and back["credential"].initial == "detected"


async def test_new_mysql_login_is_saved_encrypted_and_tested(
    sqlite_db, make_sshd, bot_key, services, mariadb_db, mariadb_user
) -> None:
    login = mariadb_user(mariadb_db)
    host = make_sshd("mysql-user", nonroot=True, client_key=bot_key[0])  # no socket root: nothing detected
    server = await probed_server(host, services)
    step, ctx = SourceStep(), context(services, server, "mysql")
    form = fields(await step.view(ctx))
    assert form["credential"].initial == "new" and [o.value for o in form["credential"].options] == ["new"]
    assert form["databases"].kind == "multiline" and form["databases"].initial == "*"

    wrong_password = "BW-wrong-" + login.password
    typed = {"credential": "new", "db_user": login.user, "db_password": wrong_password, "db_host": "localhost",
             "db_port": "3306", "databases": "*"}  # fmt: skip
    errors = await step.submit(ctx, typed)
    assert "rejected the login" in errors["db_password"] and "What to do: Check the user name and password" in (
        errors["db_password"])  # fmt: skip
    failed_id = ctx.data["credential_id"]
    row = await DatabaseCredential.get(id=failed_id)
    assert row.team_id == TEAM and row.server_id == server.id and row.test_status == TestStatus.FAILED
    assert row.password.reveal() == wrong_password
    raw = await Tortoise.get_connection("default").execute_query_dict(
        "SELECT password FROM database_credentials WHERE id = ?", [failed_id])  # fmt: skip
    assert raw[0]["password"].startswith("fernet:") and wrong_password not in raw[0]["password"]
    assert wrong_password not in json.dumps(ctx.data) and "source" not in ctx.data
    shown = await step.view(ctx)
    assert fields(shown)["credential"].initial == f"stored:{failed_id}"
    assert shown.buttons[0].value == f"stored:{failed_id}"
    failed_note = await step.act(ctx, "test_connection", f"stored:{failed_id}")
    assert failed_note.startswith(":x:") and "*What to do:*" in failed_note and wrong_password not in failed_note

    assert await step.submit(ctx, {**typed, "db_password": login.password}) == {}
    good = await DatabaseCredential.get(id=ctx.data["credential_id"])
    assert good.id != failed_id and good.test_status == TestStatus.SUCCESS and good.last_test_at <= datetime.now(UTC)
    assert ctx.data["source"]["databases"] == [] and login.password not in json.dumps(ctx.data)
    assert ctx.data["_source_found"]["databases"] == [mariadb_db.name]
    assert ctx.data["atomicity"]["method"] == "transaction"  # probed with the saved login
    again = await step.submit(ctx, {**typed, "db_password": login.password})  # the same login typed again
    assert again == {} and await DatabaseCredential.filter(server_id=server.id).count() == 2
    ok_note = await step.act(ctx, "test_connection", f"stored:{good.id}")
    assert ok_note.startswith(":white_check_mark:") and mariadb_db.name in ok_note
    form = fields(await step.view(ctx))
    assert form["databases"].kind == "multiselect" and form["databases"].initial == ["all"]
    assert [o.value for o in form["databases"].options] == ["all", f"db:{mariadb_db.name}"]
    missing_user = await step.submit(ctx, {"credential": "new", "db_user": "", "databases": "*"})
    assert "Enter the MySQL/MariaDB user" in missing_user["db_user"]
    bad_port = await step.submit(ctx, {"credential": "new", "db_user": "x", "db_port": "0", "databases": "*"})
    assert "1 to 65535" in bad_port["db_port"]


async def test_test_connection_tries_the_login_typed_on_the_screen_without_saving_it(
    sqlite_db, make_sshd, bot_key, services, mariadb_db, mariadb_user
) -> None:
    """Test connection uses what the screen holds at the click (the radio and the new-login fields), from the
    server, and saves nothing: Next is what saves a login."""
    login = mariadb_user(mariadb_db)
    host = make_sshd("mysql-typed", nonroot=True, client_key=bot_key[0])
    server = await probed_server(host, services)
    step, ctx = SourceStep(), context(services, server, "mysql")
    shown = await step.view(ctx)
    typed = {"credential": "new", "db_user": login.user, "db_host": "localhost", "db_port": "3306"}
    ctx.form = {**typed, "db_password": "BW-wrong-" + login.password}
    wrong = await step.act(ctx, "test_connection", shown.buttons[0].value)
    assert wrong.startswith(f":x: {login.user}@localhost:3306") and "*What to do:*" in wrong
    assert login.password not in wrong
    ctx.form = {**typed, "db_password": login.password}
    right = await step.act(ctx, "test_connection", shown.buttons[0].value)
    assert right.startswith(":white_check_mark:") and mariadb_db.name in right and "Not saved yet" in right
    ctx.form = {**typed, "db_port": "70000"}
    assert "1 to 65535" in await step.act(ctx, "test_connection", "new")
    ctx.form = {"credential": "new"}
    assert "Enter the MySQL/MariaDB login below" in await step.act(ctx, "test_connection", "new")
    assert await DatabaseCredential.filter(server_id=server.id).count() == 0
    assert login.password not in json.dumps(ctx.data)


# --- PostgreSQL ----------------------------------------------------------------------------------------------


async def test_postgresql_peer_detection_and_the_verdict(sqlite_db, make_sshd, bot_key, services, postgres_db) -> None:
    host = make_sshd("pg-root", client_key=bot_key[0])
    server = await probed_server(host, services)
    step, ctx = SourceStep(), context(services, server, "postgresql")
    form = fields(await step.view(ctx))
    assert form["credential"].initial == "detected" and "peer authentication" in form["credential"].options[0].label
    assert f"db:{postgres_db.name}" in [o.value for o in form["databases"].options]
    assert form["flags"].initial == ["include_globals"]
    values = {"credential": "detected", "databases": [f"db:{postgres_db.name}"], "flags": []}
    assert await step.submit(ctx, values) == {}
    assert ctx.data["source"] == {"databases": [postgres_db.name], "exclude": [], "include_globals": False}
    verdict = ctx.data["atomicity"]
    assert verdict["atomic"] and verdict["method"] == "transaction" and "repeatable-read" in verdict["reason"]
    datadir = ctx.data["_source_found"]["datadir"]
    assert datadir and ctx.data["_snapshot_methods"]["paths"] == [datadir]
    size = ctx.data["size_estimate"]  # for step 5: the data directory as an upper bound
    assert size["total_bytes"] > 0 and datadir in size["summary"] and not size["complete"]
    assert (await step.act(ctx, "test_connection", "detected")).startswith(":white_check_mark: Logged in with peer")
    view = await step.view(ctx)
    assert any(n.startswith(":lock: *Consistency*: pg_dump") for n in view.notes)
    render(view)


# --- Docker (facts recorded, see the module docstring) --------------------------------------------------------


async def test_docker_form_from_the_probe_facts(sqlite_db, make_sshd, bot_key, services, tmp_path: Path) -> None:
    host = make_sshd("docker", client_key=bot_key[0])
    server = await probed_server(host, services)
    app_data, spare = tmp_path / "app-data", tmp_path / "spare"
    app_data.mkdir()
    spare.mkdir()
    facts = docker_models.DockerFacts(
        version=docker_models.DockerVersion(client_version="26.1.5", client_api="1.45", server_version="26.1.5"),
        containers=(
            docker_models.Container(id="c1", name="web", image="nginx:1", state="running", mounts=(
                docker_models.Mount(type="volume", name="app-data", source=str(app_data), destination="/data"),)),
            docker_models.Container(id="c2", name="db", image="postgres:16", state="running"),
        ),
        volumes=(docker_models.Volume(name="app-data", mountpoint=str(app_data), size_bytes=4096, used_by=("web",)),
                 docker_models.Volume(name="spare", mountpoint=str(spare), size_bytes=0)),
        databases=(docker_models.DatabaseContainer(engine="postgresql", container="db", container_id="c2",
                                                   image="postgres:16", running=True, detected_by="image",
                                                   credential_env=("POSTGRES_PASSWORD",), credentials="env"),),
    )  # fmt: skip
    caps = dict(server.capabilities)
    docker = ProbeOutcome(name="docker", ok=True, value=facts.model_dump(mode="json"))
    caps["outcomes"] = {**caps["outcomes"], "docker": docker.model_dump()}
    await Server.filter(id=server.id).update(capabilities=caps)
    server = await Server.get(id=server.id)
    step, ctx = SourceStep(), context(services, server, "docker")
    view = await step.view(ctx)
    form = fields(view)
    assert form["volumes"].initial == ["app-data"]
    assert [o.value for o in form["volumes"].options] == ["app-data", "spare"]
    assert form["db_containers"].initial == ["db"] and form["policy:web"].initial == "none"
    render(view)

    nothing = await step.submit(ctx, {"volumes": [], "db_containers": []})
    assert nothing == {"volumes": "Choose at least one volume or database container."}
    assert "no such local volume" in (await step.submit(ctx, {"volumes": ["gone"]}))["volumes"]
    assert "Choose keep running" in (await step.submit(ctx, {"volumes": ["app-data"], "policy:web": "kill"}))[
        "policy:web"]  # fmt: skip
    values = {"volumes": ["app-data"], "db_containers": ["db"], "policy:web": "stop"}
    assert await step.submit(ctx, values) == {}
    assert ctx.data["source"] == {"volumes": ["app-data"], "policies": {"web": "stop"}, "databases": [
        {"container": "db", "databases": [], "user_env": None, "password_env": None, "engine": None}],
        "stop_timeout": 60}  # fmt: skip
    assert sources.validate("docker", ctx.data["source"]) == []
    assert ctx.data["_snapshot_methods"]["paths"] == [str(app_data)]
    assert fields(await step.view(ctx))["policy:web"].initial == "stop"


# --- MongoDB (facts recorded: no MongoDB or mongosh can be installed on this machine) ------------------------


async def test_mongodb_form_verdict_and_a_missing_client(sqlite_db, make_sshd, bot_key, services) -> None:
    host = make_sshd("mongo", client_key=bot_key[0])
    server = await probed_server(host, services)
    info = mongodb.MongoInfo(client_version="2.2.10", running=True, version="7.0.5", topology="replica_set",
                             replica_set="rs0", auth_required=False,
                             databases=(mongodb.MongoDatabase(name="logs", size_on_disk=4096),
                                        mongodb.MongoDatabase(name="shop", size_on_disk=81920)))  # fmt: skip
    caps = dict(server.capabilities)
    mongo = ProbeOutcome(name="mongodb", ok=True, value=info.model_dump(mode="json"))
    caps["outcomes"] = {**caps["outcomes"], "mongodb": mongo.model_dump()}
    await Server.filter(id=server.id).update(capabilities=caps)
    step, ctx = SourceStep(), context(services, server, "mongodb")
    form = fields(await step.view(ctx))
    assert form["credential"].initial == "detected" and "access control is off" in form["credential"].options[0].label
    assert [o.value for o in form["databases"].options] == ["all", "db:logs", "db:shop"] and "flags" not in form
    assert await step.submit(ctx, {"credential": "detected", "databases": ["db:shop"]}) == {}
    assert ctx.data["source"] == {"databases": ["shop"]} and ctx.data["credential_id"] is None
    assert ctx.data["atomicity"]["method"] == "transaction" and "--oplog" in ctx.data["atomicity"]["reason"]
    assert ctx.data["size_estimate"]["total_bytes"] == 81920 and "_snapshot_methods" not in ctx.data
    note = await step.act(ctx, "test_connection", "detected")  # for real: the sshd host has no mongosh
    assert note.startswith(":x: `mongosh` is not installed on the server.") and "postgresql" not in note
    assert "*What to do:* Install the MongoDB client on the server" in note


# --- steps 1 to 4 through the controller ---------------------------------------------------------------------


async def test_files_path_through_the_controller_keeps_answers_going_back(
    sqlite_db, make_sshd, bot_key, services, tmp_path: Path
) -> None:
    host = make_sshd("e2e", client_key=bot_key[0])
    (tmp_path / "www").mkdir()
    steps = lambda: [ServerStep(), BackupTypeStep(), SourceStep(), SnapshotStep(), Answer("pool_id")]  # noqa: E731
    controller, tenant = WizardController(steps, services), Tenant(TEAM)
    screen = await controller.start(tenant, "U1", "C1")
    sid = screen.session_id
    shown = [screen]
    shown.append(await controller.submit(tenant, "U1", sid, {"host": host.host, "port": str(host.port)}))
    shown.append(await controller.act(tenant, "U1", sid, "confirm_fingerprint", host.host_key_fingerprint,
                                      form={"fingerprint": host.host_key_fingerprint}))
    shown.append(await controller.submit(tenant, "U1", sid, {"server_id": shown[-1].view.fields[0].initial}))
    assert shown[-1].step == "type"
    shown.append(await controller.submit(tenant, "U1", sid, {"backup_type": "files"}))
    assert shown[-1].step == "source"
    shown.append(await controller.submit(tenant, "U1", sid, {"paths": str(tmp_path / "www"), "flags": None}))
    assert (shown[-1].step, shown[-1].number, shown[-1].total) == ("snapshot", 4, 5)
    shown.append(await controller.submit(tenant, "U1", sid, {"method": "none"}))
    assert shown[-1].step == "pool_id"
    back = await controller.back(tenant, "U1", sid)
    assert back.step == "snapshot" and back.view.fields[0].initial == "none"
    back = await controller.back(tenant, "U1", sid)
    assert back.step == "source" and fields(back.view)["paths"].initial == str(tmp_path / "www")
    shown += [back, await controller.back(tenant, "U1", sid)]
    shown.append(await controller.back(tenant, "U1", sid))
    assert shown[-1].step == "server" and shown[-1].view.fields[0].initial is not None
    for screen in shown:
        modal(screen)  # every screen passes slack_sdk's checks of Slack's limits
