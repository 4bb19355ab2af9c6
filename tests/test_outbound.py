"""Outbound URLs (ping URLs) against a real local HTTP server: loopback, link-local (metadata), private addresses
and non-http schemes are refused when set and at request time unless an admin allow-listed the network; redirects
to another host are not followed; the allow-list is an admin's audited workspace setting."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot import monitoring
from bot.access import Forbidden, Refused
from bot.access.actor import StaticDirectory, resolve_actor
from bot.services import chains, outbound
from storage.models import AuditLog, BackupChain, Repository, StoragePool, Workspace
from storage.tenancy import Tenant

TEAM = "T0001"
ADMIN, MEMBER = "U0ADMIN", "U0MEMBER"
DIRECTORY = StaticDirectory(admins=frozenset({ADMIN}))


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[str]]]:
    """A local HTTP server: /ok answers 200, /same redirects on the same host, /away to another host (localhost)."""
    seen: list[str] = []
    port = 0

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.host.split(':')[0]}{request.path}")
        if request.path.startswith("/same"):
            raise web.HTTPFound("/ok/after-redirect")
        if request.path.startswith("/away"):
            raise web.HTTPFound(f"http://localhost:{port}/ok/elsewhere")
        if request.path.startswith("/meta"):
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


async def test_loopback_is_refused_unless_allow_listed(server: tuple[int, list[str]]) -> None:
    port, seen = server
    url = f"http://127.0.0.1:{port}/ok/check"
    assert await monitoring.ping(url, "success") is False
    assert seen == []  # refused before any connection
    allow = monitoring.parse_networks(["127.0.0.0/8"])
    assert await monitoring.ping(url, "success", allow=allow) is True
    assert seen == ["127.0.0.1/ok/check"]


async def test_redirects_only_to_the_same_host(server: tuple[int, list[str]]) -> None:
    port, seen = server
    allow = monitoring.parse_networks(["127.0.0.1/32"])
    assert await monitoring.ping(f"http://127.0.0.1:{port}/same", "success", allow=allow) is True
    assert seen == ["127.0.0.1/same", "127.0.0.1/ok/after-redirect"]
    seen.clear()
    assert await monitoring.ping(f"http://127.0.0.1:{port}/away", "success", allow=allow) is False
    assert await monitoring.ping(f"http://127.0.0.1:{port}/meta", "success", allow=allow) is False
    assert seen == ["127.0.0.1/away", "127.0.0.1/meta"]  # neither redirect was followed


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/x", "http://10.1.2.3/x", "http://192.168.0.1/",
    "http://100.100.100.200/", "http://0.0.0.0:80/", "http://[::ffff:127.0.0.1]/", "http://localhost/x",
    "http://[fd00:ec2::254]/",
])  # fmt: skip
async def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(monitoring.OutboundRefused, match="does not send requests there"):
        await monitoring.vet(url)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x", "gopher://x/", "http://u:p@example.com/",
                                 "http://example.com:99999/", "https:///nohost"])  # fmt: skip
async def test_only_plain_http_urls(url: str) -> None:
    with pytest.raises(monitoring.OutboundRefused):
        await monitoring.vet(url)


async def test_public_addresses_pass() -> None:
    vetted = await monitoring.vet("https://1.1.1.1/ping/abc")
    assert [str(a) for a in vetted.addresses] == ["1.1.1.1"] and vetted.port == 443


async def test_set_ping_checks_the_address_and_the_allow_list_is_an_admins(
    sqlite_db: str, server: tuple[int, list[str]]
) -> None:
    port, seen = server
    tenant = Tenant(TEAM)
    pool = await tenant.create(StoragePool, name="p", base_path="/srv/borg")
    repository = await tenant.create(Repository, pool=pool, name="r", path="/srv/borg/r", passphrase="pw")
    chain = await tenant.create(BackupChain, name="web", repository=repository, status="active", timezone="UTC")
    admin = await resolve_actor(DIRECTORY, TEAM, ADMIN)
    member = await resolve_actor(DIRECTORY, TEAM, MEMBER)
    url = f"http://127.0.0.1:{port}/ok/web"

    with pytest.raises(Refused, match="loopback"):
        await chains.set_ping(admin, chain.id, url)
    with pytest.raises(Refused, match="link-local"):
        await chains.set_ping(admin, chain.id, "http://169.254.169.254/latest/meta-data/")
    assert await monitoring.ping_url_of(TEAM, chain.id) is None

    with pytest.raises(Forbidden, match="Only admins"):
        await outbound.set_allowed(member, ["127.0.0.0/8"])
    with pytest.raises(Refused, match="not an IP address"):
        await outbound.set_allowed(admin, ["internal.example"])
    assert await outbound.set_allowed(admin, ["127.0.0.1"]) == ["127.0.0.1/32"]
    assert await outbound.allowed_networks(member) == ["127.0.0.1/32"]
    assert await AuditLog.filter(action="workspace.outbound_allow", actor=ADMIN).count() == 1

    await chains.set_ping(admin, chain.id, url)
    assert await monitoring.ping_chain(chain, "success") is True and seen == ["127.0.0.1/ok/web"]
    # The allow-list withdrawn: the stored URL is refused at request time too.
    await outbound.set_allowed(admin, [])
    assert await monitoring.ping_chain(chain, "fail") is False and seen == ["127.0.0.1/ok/web"]
    assert (await Workspace.get(team_id=TEAM)).settings["outbound_allow"] == []
