"""The layering of ARCHITECTURE.md, as import-linter contracts in pyproject.toml ([tool.importlinter]).

(a) the real tree keeps every contract; (b) the checker really catches a violation of each contract, shown on a
copy of ``bot`` and ``storage`` with one deliberate bad import added; (c) the allow-list contracts (only storage
and the service layer import tortoise, only the transport imports asyncssh) name every top-level module of bot,
so a new module cannot slip past them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {
    c["id"]: c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the packages found in ``cwd`` (with ``cwd``'s pyproject.toml), no cache left behind."""
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: pip install -e '.[dev]' installs import-linter"
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "300", "NO_COLOR": "1"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def verdicts(output: str) -> dict[str, str]:
    """Contract id -> "KEPT" / "BROKEN", read from the summary lines ("<name> KEPT", "<name> BROKEN (…)")."""
    found = {}
    for contract_id, contract in CONTRACTS.items():
        for line in output.splitlines():
            for verdict in ("KEPT", "BROKEN"):
                if line.startswith(f"{contract['name']} {verdict}"):
                    found[contract_id] = verdict
    return found


def test_the_real_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert verdicts(output) == dict.fromkeys(CONTRACTS, "KEPT"), output


# One deliberate violation per contract: (contract id, new module in the copy, its import, the chain reported).
VIOLATIONS = [
    ("storage-is-the-bottom", "storage/_violation.py", "import bot", "storage._violation -> bot"),
    ("only-surfaces-know-slack-and-api", "bot/probes/_violation.py", "import bot.slack", "bot.probes._violation"),
    ("only-storage-and-services-import-tortoise", "bot/runs/_violation.py", "import tortoise",
     "bot.runs._violation -> tortoise"),
    ("only-transport-imports-asyncssh", "bot/borg/_violation.py", "import asyncssh", "bot.borg._violation -> asyncssh"),
    ("engine-never-knows-slack", "bot/backup/_violation.py", "import slack_sdk", "bot.backup._violation -> slack_sdk"),
    ("flows-and-services-on-top-of-runs", "bot/runs/_violation.py", "import bot.flows.wizard.create",
     "bot.runs._violation -> bot.flows.wizard.create"),
]  # fmt: skip


def test_every_contract_has_a_violation_case() -> None:
    assert {case[0] for case in VIOLATIONS} == set(CONTRACTS)


@pytest.mark.parametrize(("contract_id", "module", "statement", "reported"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_a_violation_breaks_its_contract(
    tmp_path: Path, contract_id: str, module: str, statement: str, reported: str
) -> None:
    for package in ("bot", "storage"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / module).write_text(f'"""A deliberate layering violation."""\n\n{statement}\n')

    result = lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    expected = dict.fromkeys(CONTRACTS, "KEPT") | {contract_id: "BROKEN"}
    assert verdicts(output) == expected, output
    assert reported in output, output  # the copy was analysed (the installed tree has no _violation modules)


def _top_level_modules() -> set[str]:
    names = {p.stem for p in (ROOT / "bot").glob("*.py") if p.name != "__init__.py"}
    names |= {p.parent.name for p in (ROOT / "bot").glob("*/__init__.py")}
    return {f"bot.{name}" for name in names}


@pytest.mark.parametrize(
    ("contract_id", "allowed"),
    [
        ("only-storage-and-services-import-tortoise", {"bot.services"}),
        ("only-transport-imports-asyncssh", {"bot.transport"}),
    ],
)
def test_allow_list_contracts_cover_every_module(contract_id: str, allowed: set[str]) -> None:
    sources = set(CONTRACTS[contract_id]["source_modules"])
    missing = _top_level_modules() - allowed - sources
    assert not missing, f"add {sorted(missing)} to source_modules of contract {contract_id!r} in pyproject.toml"
    assert not sources & allowed
