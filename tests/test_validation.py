"""Input validation: good values are cleaned, bad ones refused with a sentence saying what is accepted."""

from __future__ import annotations

import pytest

from bot import validation
from bot.validation import InvalidInput

HOSTILE = ["db1; touch /tmp/x", "$(id)", "`id`", "a b", "host\nname", "'quoted'", "-oProxyCommand=x", "", "a..b"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_hosts_are_refused(value: str) -> None:
    with pytest.raises(InvalidInput, match="DNS name"):
        validation.host(value)


@pytest.mark.parametrize(
    ("value", "clean"),
    [("DB1.Example.com.", "db1.example.com"), ("10.0.0.1", "10.0.0.1"), ("[::1]", "::1"), (" web-2 ", "web-2")],
)
def test_good_hosts_are_cleaned(value: str, clean: str) -> None:
    assert validation.host(value) == clean


def test_ports_users_and_paths() -> None:
    assert validation.port(" 2222 ") == 2222
    for bad in ("0", "65536", "22; id", ""):
        with pytest.raises(InvalidInput, match="1 to 65535"):
            validation.port(bad)
    assert validation.username("backup") == "backup"
    for bad in ("root; id", "-o", "a b", "$(id)", ""):
        with pytest.raises(InvalidInput, match="user name"):
            validation.username(bad)
    assert validation.absolute_path("/var/www/my site/") == "/var/www/my site"
    assert validation.absolute_path("/") == "/"
    for bad in ("relative/path", "/a/../etc", "/a\x00b", ""):
        with pytest.raises(InvalidInput):
            validation.absolute_path(bad)
