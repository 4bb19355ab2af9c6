"""Benchmark: a restore through the bot vs a raw ``borg extract`` of the same archive (issue 14's goal: ≤ 1.1×).

The ~1 GiB mixed data set of ``bench/chain_vs_borg.py`` is backed up once from a source sshd host to a pool sshd
host. Then, alternating which goes first, the same archive is restored on the source host into a new directory:

* raw: ``borg extract --sparse`` into the directory, nothing else;
* bot: what a ``RESTORE`` run of files does (:mod:`bot.runs.restoring`): the archive looked up and listed from the
  bot's own pool access, the target checked and marked, ``borg extract``, then the verification (files, bytes and
  links counted against the listing, a sample's SHA-256 against borg's), the marker removed.

Run as root (harness sshd).

    .venv/bin/python bench/restore_vs_borg.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chain_vs_borg import make_data
from bot.backup import restore as files
from bot.backup.repository import PoolAccess, RepoSpec, set_up
from bot.borg import create, extract
from bot.borg import list as borg_list
from bot.borg.repo import Repo
from bot.transport import SSHPool, SSHTarget
from tests.harness.sshd import SshdFactory


async def through_the_bot(src_t, repo: Repo, pool_side: tuple, archive: str, target: str) -> int:
    """A files RESTORE run's work (``bot.runs.restoring._run_files`` and its archive check); returns files."""
    transport, at_pool, borg = pool_side
    assert any(a.name == archive for a in await borg_list.archives(transport, at_pool, borg=borg))
    items = await files.listing(transport, at_pool, archive, borg=borg)
    done = await files.restore_paths(src_t, repo, archive, target, [], items=items, archive_side=pool_side,
                                     token="bench")  # fmt: skip
    assert done.verified is not None and done.verified.ok, done.verified
    return done.files


async def main(size_mib: int, repeat: int) -> None:
    factory = SshdFactory()
    try:
        source, pool_host = factory("rbench-src"), factory("rbench-pool")
        data = source.workdir / "data"
        print(f"data set: {make_data(data, size_mib) / 2**20:.0f} MiB in {data}")
        pool = SSHPool([asyncssh.read_private_key(source.client_key_path),
                        asyncssh.read_private_key(pool_host.client_key_path)])  # fmt: skip
        src_t = pool.transport(SSHTarget(source.host, source.port, source.user, source.host_public_key))
        access = PoolAccess(pool.transport(SSHTarget(pool_host.host, pool_host.port, pool_host.user,
                                                     pool_host.host_public_key)),
                            pool_host.host, pool_host.port, pool_host.user, pool_host.host_public_key)  # fmt: skip
        spec = RepoSpec(name="restore-bench", base_path=str(pool_host.workdir / "repos"))
        setup = await set_up(src_t, access, spec)
        repo = setup.source_repo(access, str(source.home), base_dir=str(source.workdir / "bb-src"))
        archive = "bench-1"
        started = time.perf_counter()
        await create.run(src_t, repo, create.paths_argv(repo, archive, [str(data)], create.CreateOptions()))
        print(f"backup made in {time.perf_counter() - started:.1f} s")
        pool_side = (access.transport, Repo(url=spec.path, passphrase=setup.passphrase), "borg")
        raw_times, bot_times = [], []
        for round_ in range(repeat):
            for mode in ("raw", "bot") if round_ % 2 == 0 else ("bot", "raw"):
                target = source.workdir / f"restored-{mode}-{round_}"
                started = time.perf_counter()
                if mode == "raw":
                    await extract.run(src_t, repo, archive, str(target))
                    raw_times.append(time.perf_counter() - started)
                else:
                    await through_the_bot(src_t, repo, pool_side, archive, str(target))
                    bot_times.append(time.perf_counter() - started)
                shutil.rmtree(target, ignore_errors=True)
        raw, bot = statistics.median(raw_times), statistics.median(bot_times)
        print(f"raw borg extract:   median {raw:.2f} s ({', '.join(f'{t:.2f}' for t in raw_times)})")
        print(f"restore by the bot: median {bot:.2f} s ({', '.join(f'{t:.2f}' for t in bot_times)})")
        print(f"ratio bot/raw: {bot / raw:.3f}x (goal <= 1.1x)")
        await pool.close()
    finally:
        factory.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.size_mib, args.repeat))
