"""Benchmark: a PostgreSQL chain run vs borgmatic on the same database (issue 4).

Prints the time ratio (chain / borgmatic) and the peak extra disk each used on the source filesystem while
it ran (goal for the chain: 0 bytes — the dump streams into borg, never through a temp file). Both write their
repository to a separate tmpfs so the repository's own growth does not count as "extra disk"; the sampler
polls the root filesystem's used bytes every 20 ms. borgmatic is installed from PyPI into bench/.venv-borgmatic
on first use. Run as root on a machine with the test PostgreSQL (127.0.0.1:5432, trust).

    .venv/bin/python bench/pg_vs_borgmatic.py [--scale 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.backup.runner import ChainPlan, run_chain
from bot.backup.sources.postgresql import PostgreSQLConfig, PostgreSQLFacts, PostgreSQLSource
from bot.borg import init
from bot.borg.repo import Repo
from bot.probes import postgresql as pg_probe
from bot.probes.base import ProbeContext
from bot.probes.dbcheck import DbCredential
from bot.transport import LocalTransport

HERE = Path(__file__).resolve().parent
BORG = str(Path(sys.executable).parent / "borg")
BM_VENV = HERE / ".venv-borgmatic"


def borgmatic() -> str:
    exe = BM_VENV / "bin" / "borgmatic"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BM_VENV)], check=True)
        subprocess.run([str(BM_VENV / "bin" / "pip"), "install", "-q", "borgmatic"], check=True)
    return str(exe)


class DiskSampler:
    """Peak used bytes of a filesystem above its level at start, sampled in a thread-free asyncio loop."""

    def __init__(self, path: str) -> None:
        self.path, self.peak, self._stop = path, 0, asyncio.Event()

    def used(self) -> int:
        stats = os.statvfs(self.path)
        return (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    async def run(self) -> None:
        base = self.used()
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used() - base)
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()


async def measured(coro, fs: str) -> tuple[float, int]:
    sampler = DiskSampler(fs)
    task = asyncio.create_task(sampler.run())
    started = time.perf_counter()
    await coro
    elapsed = time.perf_counter() - started
    sampler.stop()
    await task
    return elapsed, sampler.peak


async def chain_run(db: str, repo_dir: Path) -> None:
    local = LocalTransport()
    repo = Repo(url=str(repo_dir), passphrase="bench", base_dir=str(repo_dir.parent / "bb-base"))
    await init.run(local, repo, borg=BORG)
    info = await pg_probe.probe(ProbeContext(local))
    jobs = PostgreSQLSource().plan(
        PostgreSQLConfig(databases=(db,), include_globals=False),
        PostgreSQLFacts(info=info, credential=DbCredential(engine="postgresql", auth_method="socket")),
    )
    plan = ChainPlan(prefix="bench", jobs=jobs, source=local, repo_at_source=repo, pool=local, repo_at_pool=repo,
                     borg=BORG, pool_borg=BORG)  # fmt: skip
    result = await run_chain(plan)
    assert result.status == "ok", result.reason


async def borgmatic_run(db: str, repo_dir: Path) -> None:
    config = repo_dir.parent / "borgmatic.yaml"
    config.write_text(
        f"repositories:\n  - path: {repo_dir}\nencryption_passphrase: bench\ncompression: lz4\n"
        f"local_path: {BORG}\nsource_directories: []\n"
        f"postgresql_databases:\n  - name: {db}\n    hostname: 127.0.0.1\n    username: postgres\n"
    )
    env = {**os.environ, "BORG_BASE_DIR": str(repo_dir.parent / "bm-base")}
    for args in (["repo-create", "--encryption", "repokey-blake2"], ["create"]):
        proc = await asyncio.create_subprocess_exec(
            borgmatic(),
            "--config",
            str(config),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"borgmatic {args[0]} failed:\n{out.decode()[-2000:]}")


async def main(scale: int, repeat: int) -> None:
    borgmatic()
    db = f"bench_pg_{secrets.token_hex(3)}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {db}"], check=True)
    mount = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", str(mount)], check=True)
    try:
        subprocess.run(["pgbench", "-q", "-i", "-s", str(scale), "-h", "127.0.0.1", "-U", "postgres", db],
                       check=True, capture_output=True)  # fmt: skip
        times: dict[str, list[float]] = {"chain": [], "borgmatic": []}
        peaks: dict[str, list[int]] = {"chain": [], "borgmatic": []}
        for round_ in range(repeat):
            for name in ("chain", "borgmatic") if round_ % 2 == 0 else ("borgmatic", "chain"):
                work = mount / f"{name}-{round_}"
                work.mkdir()
                run = chain_run if name == "chain" else borgmatic_run
                elapsed, peak = await measured(run(db, work / "repo"), "/")
                times[name].append(elapsed)
                peaks[name].append(peak)
                shutil.rmtree(work)
        size = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", f"SELECT pg_size_pretty(pg_database_size('{db}'))"],
            capture_output=True,
            text=True,
        )
        print(f"database: {db}, pgbench scale {scale}, size {size.stdout.strip()}")
        for name in times:
            print(
                f"{name:10s} median {statistics.median(times[name]):.2f} s "
                f"({', '.join(f'{t:.2f}' for t in times[name])}); peak extra disk on / "
                f"{max(peaks[name]) / 2**20:.1f} MiB ({', '.join(str(p) for p in peaks[name])} bytes)"
            )
        ratio = statistics.median(times["chain"]) / statistics.median(times["borgmatic"])
        print(f"time ratio chain/borgmatic: {ratio:.2f}x")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {db}"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.scale, args.repeat))
