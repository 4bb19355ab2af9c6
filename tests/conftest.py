"""Fixtures for real parts live in tests/harness/, one module per part; they are loaded here as plugins."""

pytest_plugins = [
    "tests.harness.sshd",
    "tests.harness.borg",
    "tests.harness.databases",
    "tests.harness.btrfs",
    "tests.harness.lvm",
    "tests.harness.docker",
    "tests.harness.app",
    "tests.harness.ssh",
]
