"""Files and system sources: plans, validation, and a real backup → extract round trip over sshd with borg 1.4."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.backup import sources
from bot.backup.sources.files import DEFAULT_CACHE_EXCLUDES, FilesConfig, FilesSource
from bot.borg import create
from bot.borg import list as borg_list
from bot.borg.runner import run_borg
from tests.test_sources_support import InDir, run_job, source_host, tree_manifest

__all__ = ["source_host"]  # the fixture, re-exported so pytest finds it here


def make_tree(root: Path) -> None:
    """Names with spaces and unicode, symlinks, hard links, a sparse file, modes and exact mtimes."""
    (root / "with space" / "ünïcødé 名前").mkdir(parents=True)
    (root / "with space" / "a file.txt").write_text("hello world\n" * 100)
    (root / "with space" / "ünïcødé 名前" / "data €.bin").write_bytes(os.urandom(70_000))
    (root / "link-rel").symlink_to("with space/a file.txt")
    (root / "link-abs").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("does/not/exist")
    (root / "hard-1").write_bytes(b"shared inode\n" * 50)
    os.link(root / "hard-1", root / "with space" / "hard-2")
    sparse = root / "sparse.img"
    with sparse.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)
        fh.seek(10 * 1024 * 1024)
        fh.write(b"an island of data in a sea of holes")
    secret = root / "private.key"
    secret.write_text("not really a key\n")
    secret.chmod(0o600)
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    for i, path in enumerate(sorted(p for p in root.rglob("*") if not p.is_symlink())):
        os.utime(path, ns=(1_600_000_000_123_456_789 + i, 1_600_000_000_987_654_321 + i * 1_000_003))
    cache = root / "home" / "user" / ".cache" / "pip"
    cache.mkdir(parents=True)
    (cache / "wheel.whl").write_bytes(b"cached")
    tagged = root / "build-cache"
    tagged.mkdir()
    (tagged / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (tagged / "object.o").write_bytes(b"compiled")


async def test_files_round_trip_keeps_names_links_holes_modes_and_times(source_host, tmp_path: Path) -> None:
    host, transport, repo = source_host
    src = host.workdir / "src tree"
    src.mkdir()
    make_tree(src)
    [job] = FilesSource().plan(FilesConfig(paths=(str(src) + "/",)), None)
    assert job.paths == (str(src),) and job.excludes == DEFAULT_CACHE_EXCLUDES and job.exclude_caches
    run = await run_job(transport, repo, job, "files-1")
    assert run.error is None and run.result is not None and run.result.outcome == "ok", run.error
    target = host.workdir / "restored"
    # borg extract --sparse re-creates holes from all-zero chunks (the borg layer's extract does not expose it).
    await run_borg(InDir(transport, str(target)), ["extract", "--sparse", repo.archive("files-1")], repo)
    restored = target / str(src).lstrip("/")
    expected = tree_manifest(src)
    for excluded in ("home/user/.cache", "home/user/.cache/pip", "home/user/.cache/pip/wheel.whl",
                     "build-cache", "build-cache/CACHEDIR.TAG", "build-cache/object.o"):  # fmt: skip
        expected.pop(excluded)
    got = tree_manifest(restored)
    assert got == expected
    assert os.stat(restored / "hard-1").st_ino == os.stat(restored / "with space" / "hard-2").st_ino
    sparse = (restored / "sparse.img").stat()
    # Holes come back for all-zero chunks only: the chunk around the data island (the buzhash chunker cuts
    # 0.5-8 MiB chunks) is written in full, the rest of the 64 MiB stays unallocated.
    assert sparse.st_size == 64 * 1024 * 1024 and sparse.st_blocks * 512 <= 16 * 1024 * 1024


async def test_one_file_system_and_own_excludes_reach_borg(source_host) -> None:
    host, transport, repo = source_host
    src = host.workdir / "data"
    (src / "logs").mkdir(parents=True)
    (src / "logs" / "x.log").write_text("log")
    (src / "keep.txt").write_text("keep")
    config = FilesConfig(paths=(str(src),), excludes=("sh:**/*.log",), one_file_system=True, exclude_caches=False)
    [job] = FilesSource().plan(config, None)
    assert job.one_file_system and job.excludes == ("sh:**/*.log",) and not job.exclude_caches
    run = await run_job(transport, repo, job, "files-2")
    assert run.result is not None
    items = {i["path"] for i in await borg_list.items(transport, repo, "files-2")}
    assert f"{str(src).lstrip('/')}/keep.txt" in items and not any(p.endswith(".log") for p in items)
    assert "--one-file-system" in run.result.argv and "--exclude-caches" not in run.result.argv


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"paths": []}, "paths: choose at least one path to back up"),
        ({"paths": ["relative/dir"]}, "is not an absolute path"),
        ({"paths": ["/srv/../etc"]}, "contains '..'"),
        ({"paths": ["/srv", "/srv/www"]}, "/srv/www is inside /srv"),
        ({"paths": ["/srv", "/srv/"]}, "/srv is listed twice"),
        ({"paths": ["/srv"], "excludes": ["xx:foo"]}, "unknown style 'xx'"),
        ({"paths": ["/srv"], "excludes": ["re:(unclosed"]}, "not a valid regular expression"),
        ({"paths": ["/srv"], "excludes": ["a\nb"]}, "line break"),
        ({"paths": ["/srv"], "password": "x"}, "password: Extra inputs are not permitted"),
    ],
)
def test_files_validation_speaks_in_sentences(config: dict, fragment: str) -> None:
    problems = sources.validate("files", config)
    assert any(fragment in p for p in problems), problems


def test_valid_files_config_has_no_problems_and_is_normalised() -> None:
    assert sources.validate("files", {"paths": ["/srv/data/", "//home"], "excludes": ["sh:**/*.tmp"]}) == []
    config = sources.load_config("files", {"paths": ["/srv/data/", "//home"]})
    assert isinstance(config, FilesConfig) and config.paths == ("/srv/data", "/home")
    assert sources.validate("nope", {}) == ["Unknown source type 'nope'; known: docker, files, mongodb, mysql, "
                                            "postgresql, system."]  # fmt: skip


def test_create_options_for_a_paths_job_match_the_plan() -> None:
    [job] = FilesSource().plan(FilesConfig(paths=("/a",), excludes=("pp:/a/tmp",)), None)
    args = create.paths_argv(
        __import__("bot.borg.repo", fromlist=["Repo"]).Repo(url="/r"), "x",
        job.paths, create.CreateOptions(excludes=job.excludes, one_file_system=job.one_file_system),
    )  # fmt: skip
    assert args[-2:] == ("/r::x", "/a") and ("--exclude", "pp:/a/tmp") == args[args.index("pp:/a/tmp") - 1 :][:2]
