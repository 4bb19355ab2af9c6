"""Benchmark: time to ack for 100 concurrent users clicking through the wizard (issue 5's goal: p99 ≤ 50 ms at the
app and ≤ 1.5× a bare bolt app on the same harness), signed HTTP requests, three processes. Needs ``wrk``
(``apt-get install -y wrk``); ``--profile DIR`` also needs ``py-spy`` in the venv (not a project dependency).

    .venv/bin/python bench/wizard_ack.py [--users 100] [--think-ms 1000,500] [--duration 20] [--modes paced,flat]

Processes. (1) The app under test serves ``/slack/events`` over HTTP as ``backup-bot run`` does in HTTP mode
(``build_app`` + ``http_app``: bolt's signature check, the tenant middleware, every listener registered), with a
SQLite database (the default) in a temporary directory, pinned to a core of its own (``sched_setaffinity``;
``--no-pin`` leaves placement to the kernel, which makes runs noisier). (2) This process runs the project's Slack
emulator — the Web API the app calls after its acks (views.update) — and orchestrates. (3) ``wrk`` (Debian's, C +
LuaJIT) is the load generator, with ``bench/wizard_ack.lua``: one wrk thread and one keep-alive connection per
user, so 100 users are 100 connections and a user never has two clicks in flight.

The requests are real. Before measuring, each of the 100 users opens the wizard with ``/backup new`` through the
emulator's driver (so a WizardSession row and an open modal exist), answers step 1, and then plays one cycle of
clicks through the driver while the exact request bodies are recorded: Next (step 2 → 3), Next (3 → 4), Next
(4 → 5), Back (5 → 4), Next (4 → 5), and the step's "Start over" button (a ``wizard_act:`` action jumping back to
step 2, the path of validation's "Fix: …" buttons). The cycle ends where it began, so wrk replays it forever: per
cycle 4 view_submissions (answered in the ack with the next screen, so the session is read, moved and rendered
before the answer, and saved right after it) and 2 block_actions (acked at once; read, move, save and views.update
to the emulator after the ack). Bodies are re-signed with the app's signing secret and a fresh timestamp before
every wrk run (bolt accepts 5 minutes). The wizard's ten steps are cheap in-memory steps shaped like the real
screens (a heading, a note, a select with eight options, a text input, a button), all of them fast steps — the
worst case for the ack, since the real wizard's slow steps answer "working…" without running — so what is measured
is the bot's own work, not SSH.

Apps compared, each in its own process, fed the identical request files:
  * ``bare-ack``: a stock bolt ``AsyncApp`` with the same signing secret whose listeners only ack (a submission is
    answered with a constant view, the same bytes as the wizard's answer);
  * ``bare``: the same, plus after a button's ack the Web API call the wizard makes (views.update of a constant
    view): the same traffic. The goal's ratio is taken against this one;
  * ``bare-prompt``: ``bare`` with the bot's ``bot.slack.prompt_ack`` runner, which answers at ``ack()`` instead of
    at bolt's next 10 ms poll — the floor for the bot's own app;
  * ``wizard``: the bot's app with the wizard.

Load (100 connections each): ``paced`` — every user pauses a random 0.5–1.5 × ``--think-ms`` after each answer
before the next click; the default runs 1000 ms (100 people clicking once a second each, already several times
faster than anyone fills in a modal) and 500 ms (twice a second); ``flat`` — no pause after a submission, every
connection sends its next click as soon as the answer is in (a button's new screen arrives by views.update, so the
user waits ``--button-ms`` for it): saturation, where latency is mostly queueing and requests/s is the capacity.
Each run warms up for ``--warmup`` s, then keeps the requests sent in the next ``--duration`` s.

Time to ack is measured twice: at the client (wrk's Lua takes CLOCK_MONOTONIC when a request is handed to the
socket and when the whole answer has been read) and at the app (an aiohttp middleware in the app process,
outermost around bolt's request handler, from the handler's start to the response written to the socket). The app
side misses only the time a request waits in the kernel before the app's event loop reads it; the client side
includes it. The work is checked, not assumed: for the wizard the sum of the session rows' ``version`` (one save per
click) must grow by the number of clicks the app handled, and views.update calls that reached the emulator are
counted against the buttons clicked; answers and updates saying "changed in another window" (the version check
refusing a stale click) are counted too. The CPU that other processes on the machine used during each run is
printed ("other processes' CPU", in cores): work of others on the same cores shows up in the figures.

Figures on the 2-core development machine (2026-12-06, app-side p99 / client p99, ms): ``paced`` 1000 ms (100
people clicking once a second each, the goal's load): bare 13.7 / 15.6, wizard 14.8 / 18.9 (1.08×; other runs
1.09–1.27×); ``paced`` 500 ms: bare 23.5 / 52.5, wizard 36.6 / 54.7 (1.56×; other runs up to 2–4× — a core ~70% busy
queues the bursts); ``flat``: capacity 357 clicks/s for the wizard against 748 for the bare app. A click's durable
save (SQLite through Tortoise's single worker thread, before the answer) and bolt's own request parsing are most
of the difference; the wizard reads no session from the database on a click (the controller keeps its last save).

2026-12-07, with every save checked against the wizard's typed answers (``SessionData``): ``paced`` 1000 ms, bare
13.0 / 13.8, wizard 10.7 / 12.6 (0.83×; the first run after installing wrk gave 380 ms, a cold start, not seen
again); ``paced`` 500 ms: bare 13.0 / 15.7, wizard 15.4 / 19.5 (1.19×); ``flat``: 618 clicks/s against 1099.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import load_settings
from bot.flows.wizard.controller import GOTO, WizardController
from bot.flows.wizard.steps.base import BaseStep, Button, Errors, Field, Option, StepView, WizardContext
from bot.slack import prompt_ack
from bot.slack.app import EVENTS_PATH, build_app, http_app
from bot.slack.emulator import DEFAULT_BOT_TOKEN, SlackDriver, SlackEmulator
from bot.slack.emulator.signing import signature
from bot.slack.emulator.transport import AppResponse, HttpTransport
from bot.slack.wizard_render import ACT_PREFIX, BACK, CALLBACK_ID

SECRET = "bench-secret"
LUA = Path(__file__).with_suffix(".lua")
STEPS = ("server", "type", "source", "snapshot", "pool", "repository", "retention", "schedule", "validation", "review")
CYCLE = ("submit", "submit", "submit", "back", "submit", "act")  # step 2 → 3 → 4 → 5 → 4 → 5 → 2
APPS = ("bare-ack", "bare", "bare-prompt", "wizard")
APP_CPUS: set[int] = set()
GONE_TEXTS = ("changed in another window", "finished or cancelled", "expired after", "went wrong")


# -- the wizard under test ------------------------------------------------------------------------------------


class BenchStep(BaseStep):
    """A cheap step shaped like the real ones: heading, note, a select and a text input, one button."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, title=name.title())

    async def view(self, ctx: WizardContext) -> StepView:
        options = tuple(Option(v, f"{self.name} option {v.upper()}", f"about {v}") for v in "abcdefgh")
        return StepView(
            heading=f"*{self.title}*: pick one of the eight {self.name} options below.",
            notes=(f"Answers so far: {', '.join(k[1:] for k in ctx.data if k not in ('_user_tz', GOTO)) or 'none'}.",),
            fields=(
                Field(self.name, self.title, "select", options=options, initial=ctx.data.get(f"_{self.name}")),
                Field(
                    f"{self.name}_note",
                    "Note",
                    "text",
                    initial=ctx.data.get(f"_{self.name}_note"),
                    optional=True,
                    hint="Anything to remember about this choice.",
                ),
            ),
            buttons=(Button("fix", "Start over", value="type"),),
        )

    async def submit(self, ctx: WizardContext, values: Mapping[str, Any]) -> Errors:
        if values.get(self.name) not in (None, *"abcdefgh"):  # None: a stale screen's answer (keeps cycles aligned)
            return {self.name: "Pick one of the options."}
        # Scratch keys (``_…``): the wizard's schema (bot.services.answers.SessionData) checks every save, as in the
        # real wizard, and lets a step's own scratch values through.
        ctx.data[f"_{self.name}"] = values.get(self.name)
        ctx.data[f"_{self.name}_note"] = values.get(f"{self.name}_note")
        return {}

    async def act(self, ctx: WizardContext, action: str, value: str) -> str | None:
        ctx.data[GOTO] = value  # like validation's "Fix: …": the controller jumps back to that step
        return None


def steps() -> list[BenchStep]:
    return [BenchStep(name) for name in STEPS]


# -- the app process --------------------------------------------------------------------------------------------


def bare_app(api_url: str, view: dict[str, Any], *, update_after_ack: bool) -> AsyncApp:
    """A bolt app whose listeners only ack (and, with ``update_after_ack``, make the wizard's Web API call)."""
    app = AsyncApp(client=AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=api_url), signing_secret=SECRET)

    @app.view(CALLBACK_ID)
    async def submitted(ack):
        await ack(response_action="update", view=view)

    async def clicked(ack, body, client):
        await ack()
        if update_after_ack:
            await client.views_update(view_id=body["view"]["id"], view=view)

    app.action(BACK)(clicked)
    app.action({"action_id": ACT_PREFIX + "fix"})(clicked)
    return app


def kind_of(body: bytes) -> str:
    """Which interaction a request body is (payloads are urlencoded JSON; the clicked action comes last)."""
    if b"view_submission" in body[:120]:
        return "submit"
    if b"block_actions" in body[:120]:
        return "act" if body.rfind(ACT_PREFIX.encode()[:-1]) > body.rfind(BACK.encode()) else "back"
    return "other"


class AckProbe:
    """Server-side time to ack: outermost aiohttp middleware, from the handler's start to the response written."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, str]] = []

    def install(self, web_app: web.Application, with_db: bool) -> None:
        samples = self.samples

        @web.middleware
        async def timed(request: web.Request, handler):
            start = time.monotonic()
            response = await handler(request)
            if request.path == EVENTS_PATH:
                try:
                    await response.prepare(request)
                    await response.write_eof()
                except ConnectionResetError:  # wrk closed the connection at its end: not an answered request
                    return response
                samples.append((start, time.monotonic() - start, kind_of(await request.read())))
            return response

        async def probe(request: web.Request) -> web.Response:
            if request.query.get("reset"):
                samples.clear()
            saves = states = None
            if with_db:
                from storage.models import WizardSession

                rows = await WizardSession.all().values("version", "state")
                saves = sum(r["version"] for r in rows)
                states = {}
                for r in rows:
                    states[r["state"]] = states.get(r["state"], 0) + 1
            return web.json_response({"samples": samples, "cpu": time.process_time(), "saves": saves, "states": states,
                                      "tasks": len(asyncio.all_tasks())})  # fmt: skip

        web_app.middlewares.append(timed)
        web_app.router.add_get("/bench/probe", probe)


async def serve(kind: str, api_url: str, port: int, workdir: Path) -> None:
    """Child process: serve one app on ``port`` until killed."""
    from storage import db
    from storage.crypto import Keyring, generate_key, install_keyring

    install_keyring(Keyring([generate_key()]))
    async with db.database(f"sqlite://{workdir / f'{kind}.sqlite3'}"):
        if kind == "wizard":
            settings = load_settings(workdir / "none.env", SLACK_BOT_TOKEN=DEFAULT_BOT_TOKEN,
                                     SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=api_url,
                                     BACKUPBOT_SECRET_KEYS=generate_key())  # fmt: skip
            app = build_app(settings, wizard=WizardController(steps, services=None))
        else:
            view = json.loads((workdir / "answer.json").read_text())
            app = bare_app(api_url, view, update_after_ack=kind != "bare-ack")
            if kind == "bare-prompt":
                prompt_ack.install(app)  # the bot's own answer-at-ack() runner, for comparison
        web_app = http_app(app)  # as serve_http builds it, plus the probe
        AckProbe().install(web_app, with_db=kind == "wizard")
        runner = web.AppRunner(web_app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()


@dataclass
class Child:
    kind: str
    proc: asyncio.subprocess.Process
    base: str

    @property
    def url(self) -> str:
        return self.base + EVENTS_PATH

    async def probe(self, reset: bool = False) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.get(self.base + "/bench/probe", params={"reset": "1"} if reset else {}) as resp:
                return await resp.json()

    async def stop(self) -> None:
        self.proc.kill()
        await self.proc.wait()


async def start_child(kind: str, api_url: str, workdir: Path) -> Child:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", kind, "--api-url", api_url,
                                                "--port", str(port), "--workdir", str(workdir),
                                                stdout=asyncio.subprocess.PIPE)  # fmt: skip
    if APP_CPUS:
        os.sched_setaffinity(proc.pid, APP_CPUS)  # before it serves (its database thread starts later and inherits)
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    assert line.strip() == b"ready", line
    return Child(kind, proc, f"http://127.0.0.1:{port}")


# -- recording each user's cycle -----------------------------------------------------------------------------------


class Recorder(HttpTransport):
    """The driver's signed-HTTP transport, keeping the raw bodies (and answers) while ``on``."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__(url, secret)
        self.on = False
        self.bodies: list[bytes] = []
        self.answers: list[AppResponse] = []

    async def post_raw(self, body: bytes, content_type: str, headers: dict[str, str]) -> AppResponse:
        response = await super().post_raw(body, content_type, headers)
        if self.on:
            self.bodies.append(body)
            self.answers.append(response)
        return response


def step_number(view: dict[str, Any] | None) -> str:
    text = json.dumps((view or {}).get("blocks", [])[:1])
    return text.split("Step ", 1)[1].split(" ", 1)[0] if "Step " in text else "?"


async def record_cycle(slack: SlackEmulator, url: str, user: str, gate: asyncio.Semaphore):
    """Open the wizard for ``user``, go to step 2, then play (and record) one cycle that ends at step 2 again."""
    async with gate:
        transport = Recorder(url, SECRET)
        driver = SlackDriver(slack, transport, user=user, late_ok=True)

        async def next_(name: str) -> None:
            await driver.set_value("v", "a", block_id=name)
            response = await driver.submit()
            assert response.status == 200 and response.json.get("response_action") == "update", response.body

        async def click(action_id: str) -> None:
            response = await driver.click(action_id)
            assert response.status == 200, response.body
            await driver.wait_for_view(within=30)

        try:
            await driver.slash_command("/backup", "new")
            await driver.wait_for_view(callback_id=CALLBACK_ID, within=30)
            await next_("server")
            transport.on = True
            for name in ("type", "source", "snapshot"):
                await next_(name)
            await click(BACK)
            await next_("snapshot")
            await click(ACT_PREFIX + "fix")
            transport.on = False
            assert step_number(driver.current_view()) == "2", "the recorded cycle must end where it began"
        finally:
            await driver.aclose()
        return list(zip(CYCLE, transport.bodies, strict=True)), transport.answers[0].json["view"]


def write_requests(folder: Path, cycles: list[list[tuple[str, bytes]]]) -> None:
    """One file per user for the Lua script, signed now (bolt accepts requests up to 5 minutes old)."""
    folder.mkdir(exist_ok=True)
    stamp = int(time.time())
    for uid, cycle in enumerate(cycles):
        lines = [f"{kind}\t{stamp}\t{signature(SECRET, stamp, body)}\t{body.decode()}\n" for kind, body in cycle]
        (folder / f"{uid:03d}.req").write_text("".join(lines))


# -- one measured run ------------------------------------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def summary(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50": pct(ms, 50), "p95": pct(ms, 95), "p99": pct(ms, 99), "max": max(ms, default=0.0)}


async def settle(slack: SlackEmulator, child: Child, quiet: float = 1.0, limit: float = 30.0) -> None:
    """Wait for post-ack work to finish: no new emulator calls for ``quiet`` seconds."""
    deadline = time.monotonic() + limit
    seen, since = len(slack.calls), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if len(slack.calls) != seen:
            seen, since = len(slack.calls), time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


async def run_wrk(slack: SlackEmulator, child: Child, cycles, workdir: Path, *, think_ms: int, button_ms: int,
                  warmup: float, duration: float, profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    users = len(cycles)
    folder, out = workdir / "requests", workdir / f"wrk-{child.kind}.txt"
    write_requests(folder, cycles)
    before = await child.probe(reset=True)
    calls_before = len(slack.calls)
    load_before = os.getloadavg()[0]
    busy_before, mine_before = machine_busy(), time.process_time() + children_cpu()
    begin = time.monotonic() + 0.5
    t_from, t_to = begin + warmup, begin + warmup + duration
    total = int(warmup + duration + 1.5)
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t", str(users), "-c", str(users), "-d", f"{total}s", "--timeout", "10s", "-s", str(LUA), child.url,
        "--", str(folder), str(think_ms), str(int(t_from * 1e6)), str(int(t_to * 1e6)), str(out),
        str(button_ms),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    spy = None
    if profile is not None:  # py-spy (pip install py-spy; not a project dependency) samples the app process
        spy = await asyncio.create_subprocess_exec(
            shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")), "record",
            "--pid", str(child.proc.pid), "--duration", str(int(warmup + duration)), "--rate", "250",
            "--format", "raw", "--output", str(profile), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    stdout, stderr = await proc.communicate()
    busy, mine = machine_busy() - busy_before, time.process_time() + children_cpu() - mine_before
    if spy is not None:
        await spy.wait()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {stderr.decode()}{stdout.decode()}")
    await settle(slack, child)
    after = await child.probe()

    client: dict[str, list[float]] = {}
    bad = gone = 0
    for line in out.read_text().splitlines():
        if line.startswith("#bad"):
            _, b, g = line.split()
            bad, gone = bad + int(b), gone + int(g)
            continue
        kind, micros, _ok = line.split()
        client.setdefault(kind, []).append(int(micros) / 1000)
    server: dict[str, list[float]] = {}
    handled: dict[str, int] = {}
    for start, seconds, kind in after["samples"]:
        handled[kind] = handled.get(kind, 0) + 1
        if t_from <= start < t_to:
            server.setdefault(kind, []).append(seconds * 1000)
    updates = [c for c in slack.calls[calls_before:] if c.method == "views.update"]
    gone_updates = sum(1 for c in updates if any(t in json.dumps(c.params.get("view")) for t in GONE_TEXTS))
    everything_client = [v for vs in client.values() for v in vs]
    everything_server = [v for vs in server.values() for v in vs]
    return {
        "app": child.kind,
        "client": summary(everything_client),
        "server": summary(everything_server),
        "client_by_kind": {k: summary(v) for k, v in sorted(client.items())},
        "server_by_kind": {k: summary(v) for k, v in sorted(server.items())},
        "rps": len(everything_client) / duration,
        "cpu": (after["cpu"] - before["cpu"]) / (total - 0.5),
        "handled": handled,
        "bad": bad,
        "gone_acks": gone,
        "updates_ok": sum(1 for c in updates if c.ok),
        "updates_failed": sum(1 for c in updates if not c.ok),
        "gone_updates": gone_updates,
        "saves": None if after["saves"] is None else after["saves"] - before["saves"],
        "loadavg": (load_before, os.getloadavg()[0]),
        # CPU of everything else on the machine while wrk ran (cores busy, less this bench's own processes)
        "others": max(0.0, busy - mine - (after["cpu"] - before["cpu"])) / (total - 0.5),
        "states": after["states"],
    }


def report(mode: str, results: dict[str, dict[str, Any]]) -> list[str]:
    """Print one mode's results; returns its lines for the closing summary."""
    for result in results.values():
        c, s = result["client"], result["server"]
        print(f"  {result['app']:11s} client p50 {c['p50']:6.1f} p95 {c['p95']:6.1f} p99 {c['p99']:6.1f} "
              f"max {c['max']:6.1f} ms | app p50 {s['p50']:6.1f} p95 {s['p95']:6.1f} p99 {s['p99']:6.1f} "
              f"max {s['max']:6.1f} ms | {result['rps']:6.1f} req/s, app CPU {result['cpu']:.0%}, "
              f"n={c['n']}, other processes' CPU {result['others']:.0%}")  # fmt: skip
        for kind, k in result["server_by_kind"].items():
            kc = result["client_by_kind"].get(kind, {"p99": float("nan")})
            print(f"      {kind:6s} app p50 {k['p50']:6.1f} p99 {k['p99']:6.1f} max {k['max']:6.1f} ms"
                  f"  (client p99 {kc['p99']:6.1f})  n={k['n']}")  # fmt: skip
        clicks = result["handled"].get("back", 0) + result["handled"].get("act", 0)
        work = (f"    work: handled {result['handled']}; non-200 {result['bad']}; views.update ok "
                f"{result['updates_ok']}/{clicks if result['app'] != 'bare-ack' else 0} expected, failed "
                f"{result['updates_failed']}")  # fmt: skip
        if result["saves"] is not None:
            expected = sum(result["handled"].get(k, 0) for k in ("submit", "back", "act"))
            work += (f"; session saves {result['saves']}/{expected} expected; version conflicts shown "
                     f"{result['gone_acks']} in acks + {result['gone_updates']} in updates; sessions by step "
                     f"{result['states']}")  # fmt: skip
        print(work)
    wizard, bare = results["wizard"], results["bare"]
    ratios = []
    for base in ("bare", "bare-ack", "bare-prompt"):
        ref = results[base]
        ratios.append(f"{wizard['server']['p99'] / ref['server']['p99']:.2f}x {base}")
        print(f"  wizard/{base}: p99 at the app {wizard['server']['p99'] / ref['server']['p99']:.2f}x, "
              f"at the client {wizard['client']['p99'] / ref['client']['p99']:.2f}x; "
              f"p50 at the app {wizard['server']['p50'] / ref['server']['p50']:.2f}x")  # fmt: skip
    ok = wizard["server"]["p99"] <= 50 and wizard["server"]["p99"] <= 1.5 * bare["server"]["p99"]
    print(f"  goal (app p99 ≤ 50 ms and ≤ 1.5x bare) in {mode} mode: {'met' if ok else 'NOT met'}")
    lines = [f"{mode}: goal {'met' if ok else 'NOT met'}; wizard app p99 / " + ", ".join(ratios)]
    for result in results.values():
        c, s = result["client"], result["server"]
        app_side = " / ".join(f"{s[p]:5.1f}" for p in ("p50", "p95", "p99", "max"))
        client_side = " / ".join(f"{c[p]:5.1f}" for p in ("p50", "p95", "p99", "max"))
        lines.append(f"  {result['app']:11s} p50/p95/p99/max app {app_side}  client {client_side}  "
                     f"{result['rps']:6.1f} req/s")  # fmt: skip
    return lines


async def main(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install -y wrk")
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:  # the app gets a core of its own; the emulator and wrk share the others
        APP_CPUS.add(cpus[-1])
        os.sched_setaffinity(0, set(cpus[:-1]))  # wrk, started from here, inherits it
        print(f"app processes on CPU {cpus[-1]}, emulator and wrk on CPU {', '.join(map(str, cpus[:-1]))}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-wizard-"))
    users = [f"U{i:04d}B" for i in range(args.users)]
    async with SlackEmulator() as slack:
        for user in users:
            slack.add_user(user, "T0001", name=user.lower())
        wizard = await start_child("wizard", slack.api_url, workdir)
        children = [wizard]
        try:
            gate = asyncio.Semaphore(10)
            recorded = await asyncio.gather(*(record_cycle(slack, wizard.url, u, gate) for u in users))
            cycles = [cycle for cycle, _ in recorded]
            (workdir / "answer.json").write_text(json.dumps(recorded[0][1]))
            await settle(slack, wizard)
            children += [await start_child(kind, slack.api_url, workdir) for kind in APPS if kind != "wizard"]
            by_kind = {c.kind: c for c in children}
            runs = [(f"paced {t} ms", t) for t in args.think_ms if "paced" in args.modes.split(",")]
            runs += [("flat", 0)] if "flat" in args.modes.split(",") else []
            summary_lines = []
            for mode, think in runs:
                print(f"{mode}: {args.users} users = {args.users} connections, think {think} ms, "
                      f"{args.duration:g} s measured after {args.warmup:g} s warm-up", flush=True)  # fmt: skip
                results = {}
                for kind in args.apps.split(","):
                    spy = args.profile / f"{mode}-{kind}.txt" if args.profile else None
                    results[kind] = await run_wrk(slack, by_kind[kind], cycles, workdir, think_ms=think,
                                                  button_ms=args.button_ms, warmup=args.warmup, duration=args.duration,
                                                  profile=spy)  # fmt: skip
                if set(results) == set(APPS):
                    summary_lines += report(mode, results)
                else:
                    for result in results.values():
                        print(json.dumps({k: result[k] for k in ("app", "client", "server", "rps", "cpu", "others")}))
                if args.json:
                    with args.json.open("a") as fh:
                        fh.write(json.dumps({"mode": mode, "think_ms": think, "results": results}) + "\n")
            if summary_lines:
                print("\nsummary (ms; app = measured in the app process, client = measured by wrk):")
                print("\n".join(summary_lines))
        finally:
            for child in children:
                await child.stop()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument(
        "--think-ms",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000, 500],
        help="mean pause between a user's clicks in paced mode; several: one paced run each",
    )
    parser.add_argument(
        "--button-ms",
        type=int,
        default=200,
        help="flat mode: pause after a button, whose new screen arrives by views.update",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured per app and mode")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--modes", default="paced,flat", help="paced, flat or both (comma-separated)")
    parser.add_argument("--profile", type=Path, help="write py-spy samples of each app process to this folder")
    parser.add_argument("--apps", default=",".join(APPS), help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not give the app process a core of its own (default: pinned with sched_setaffinity)",
    )
    parser.add_argument("--json", type=Path, help="append the raw results to this file")
    parser.add_argument("--serve", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.api_url, args.port, args.workdir))
    else:
        asyncio.run(main(args))
