"""Retention decisions (borg 1.4.5 prune semantics) on hand-made edge cases, and the ``retention preview`` CLI.

Expected values are worked out by hand from borg's rules (see ``bot/backup/retention.py``); the same rules are
checked against the real borg on generated archive sets in ``tests/test_retention_borg.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from borg.helpers.parseformat import interval as borg_interval

from bot.backup.retention import Archive, Decision, Policy, decide, parse_interval, policy_summary, validate
from bot.cli import main

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2030, 1, 1, tzinfo=UTC)  # far after every archive below, so keep-within is only used on purpose


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def archives(*times: str) -> list[Archive]:
    """Archives named after their UTC time (names then sort like times, except where a test says otherwise)."""
    return [Archive(t, utc(t)) for t in times]


def kept(decisions: Iterable[Decision]) -> list[tuple[str, str | None, int | None]]:
    return [(d.name, d.rule, d.rank) for d in decisions if d.keep]


def run(items: Iterable[Archive], tz: ZoneInfo | None = None, now: datetime = NOW, **policy: int | str) -> list:
    return kept(decide(items, Policy(**policy), tz or ZoneInfo("UTC"), now=now))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- keep-within


@pytest.mark.parametrize(
    "text", ["2d", "12H", "1w", "1m", "1y", "+2d", " 3d", "2D", "2h", "0d", "-1d", "d", "1.5d", "2x", "", "1e3d"]
)
def test_interval_parsing_accepts_exactly_what_borg_accepts(text: str) -> None:
    """borg's own ``interval()`` is the oracle: same acceptance, same number of hours."""
    try:
        hours = borg_interval(text)
    except (argparse.ArgumentTypeError, IndexError):
        hours = None
    if hours is None:
        with pytest.raises(ValueError, match="keep-within"):
            parse_interval(text)
    else:
        assert parse_interval(text) == timedelta(hours=hours)


def test_interval_units() -> None:
    """m is 31 days and y is 365 days in borg, not calendar months/years."""
    assert parse_interval("1m") == timedelta(days=31)
    assert parse_interval("1y") == timedelta(days=365)
    assert parse_interval("2w") == timedelta(days=14)


def test_keep_within_counts_from_now_and_is_strict() -> None:
    """Within = strictly newer than now − interval, numbered newest first; exactly at the cutoff is pruned."""
    now = utc("2024-06-10T12:00:00")
    items = archives("2024-06-08T12:00:00", "2024-06-08T12:00:01", "2024-06-10T11:00:00")
    assert run(items, now=now, keep_within="2d") == [
        ("2024-06-10T11:00:00", "within", 1),
        ("2024-06-08T12:00:01", "within", 2),
    ]


def test_keep_within_is_not_measured_from_the_newest_archive() -> None:
    """borg 1.4.5 measures from the current time: old archives are all pruned by a within-only policy."""
    items = archives("2024-01-01T00:00:00", "2024-01-02T00:00:00")
    assert run(items, now=utc("2024-02-01T00:00:00"), keep_within="2d") == []


def test_keep_within_one_month_is_31_days() -> None:
    now = utc("2024-03-31T00:00:00")
    items = archives("2024-02-29T00:00:01", "2024-02-29T00:00:00", "2024-03-01T00:00:00")
    assert [name for name, _, _ in run(items, now=now, keep_within="1m")] == [
        "2024-03-01T00:00:00",
        "2024-02-29T00:00:01",
    ]


def test_archives_kept_by_within_do_not_count_for_later_rules() -> None:
    """The newest day is spent by keep-within, so daily 2 reaches two further days."""
    items = archives(*(f"2024-05-0{day}T10:00:00" for day in range(1, 6)))
    assert run(items, now=utc("2024-05-05T11:00:00"), keep_within="1d", keep_daily=2) == [
        ("2024-05-05T10:00:00", "within", 1),
        ("2024-05-04T10:00:00", "daily", 1),
        ("2024-05-03T10:00:00", "daily", 2),
    ]


# --------------------------------------------------------------------------------------------- period rules


def test_newest_archive_of_each_period_is_kept() -> None:
    items = archives("2024-05-01T08:00:00", "2024-05-01T20:00:00", "2024-05-02T09:00:00", "2024-05-02T09:30:00")
    assert run(items, keep_daily=2) == [("2024-05-02T09:30:00", "daily", 1), ("2024-05-01T20:00:00", "daily", 2)]


def test_rules_apply_in_borg_order_and_spend_periods_already_kept() -> None:
    """Daily keeps Jan 8–10; weekly finds its newest week's archive already kept (spent, not counted), keeps
    Sunday Jan 7 of the week before, then runs out and keeps the oldest archive as weekly[oldest]."""
    items = archives(*(f"2024-01-{day:02d}T12:00:00" for day in range(1, 11)))
    assert run(items, keep_weekly=2, keep_daily=3) == [
        ("2024-01-10T12:00:00", "daily", 1),
        ("2024-01-09T12:00:00", "daily", 2),
        ("2024-01-08T12:00:00", "daily", 3),
        ("2024-01-07T12:00:00", "weekly", 1),
        ("2024-01-01T12:00:00", "weekly[oldest]", 2),
    ]


def test_quarterly_rules_come_before_yearly() -> None:
    """3monthly takes June 2024 first, so yearly finds 2024 spent and keeps 2023 instead."""
    items = archives("2023-06-01T00:00:00", "2024-01-15T00:00:00", "2024-06-01T00:00:00")
    assert run(items, keep_yearly=2, keep_3monthly=1) == [
        ("2024-06-01T00:00:00", "quarterly_3monthly", 1),
        ("2023-06-01T00:00:00", "yearly", 1),
    ]


def test_oldest_is_kept_when_a_rule_runs_short() -> None:
    items = archives("2024-05-01T08:00:00", "2024-05-01T20:00:00", "2024-05-02T09:00:00", "2024-05-03T09:00:00")
    assert run(items, keep_daily=5)[-2:] == [
        ("2024-05-01T20:00:00", "daily", 3),
        ("2024-05-01T08:00:00", "daily[oldest]", 4),
    ]


def test_oldest_fallback_needs_an_unkept_oldest_archive() -> None:
    """Alone in its day, the oldest is kept normally; with a negative count (no limit) there is no fallback."""
    items = archives("2024-05-01T08:00:00", "2024-05-02T09:00:00")
    assert run(items, keep_daily=5) == [("2024-05-02T09:00:00", "daily", 1), ("2024-05-01T08:00:00", "daily", 2)]
    items = archives("2024-05-01T08:00:00", "2024-05-01T09:00:00")
    assert run(items, keep_daily=-1) == [("2024-05-01T09:00:00", "daily", 1)]


def test_a_filled_rule_keeps_no_oldest() -> None:
    items = archives("2024-05-01T08:00:00", "2024-05-01T20:00:00", "2024-05-02T09:00:00")
    assert run(items, keep_daily=2) == [("2024-05-02T09:00:00", "daily", 1), ("2024-05-01T20:00:00", "daily", 2)]


def test_keep_last_is_keep_secondly() -> None:
    """Same rule under borg's name "secondly"; two archives in one second count once."""
    items = archives("2024-05-01T08:00:00", "2024-05-01T08:00:01", "2024-05-01T08:00:02")
    expected = [("2024-05-01T08:00:02", "secondly", 1), ("2024-05-01T08:00:01", "secondly", 2)]
    assert run(items, keep_last=2) == expected
    assert run(items, keep_secondly=2) == expected
    assert run(items, keep_last=2, keep_secondly=2) == expected


def test_iso_week_and_iso_year_boundaries() -> None:
    """2021-01-03 (Sunday) is in ISO week 2020-W53 together with 2020-12-31; 2021-01-04 starts 2021-W01."""
    items = archives("2020-12-31T12:00:00", "2021-01-01T12:00:00", "2021-01-03T12:00:00", "2021-01-04T12:00:00")
    assert run(items, keep_weekly=-1) == [("2021-01-04T12:00:00", "weekly", 1), ("2021-01-03T12:00:00", "weekly", 2)]
    assert run(items, keep_yearly=-1) == [("2021-01-04T12:00:00", "yearly", 1), ("2020-12-31T12:00:00", "yearly", 2)]
    # Monday 2025-12-29 already belongs to 2026-W01, like Friday 2026-01-02.
    items = archives("2025-12-28T12:00:00", "2025-12-29T12:00:00", "2026-01-02T12:00:00")
    assert [n for n, _, _ in run(items, keep_weekly=-1)] == ["2026-01-02T12:00:00", "2025-12-28T12:00:00"]


def test_13weekly_follows_iso_weeks_and_3monthly_follows_months() -> None:
    """Monday 2024-12-30 is ISO 2025-W01: quarter 1 of 2025 for 13weekly, but Q4 2024 for 3monthly."""
    items = archives("2024-12-29T12:00:00", "2024-12-30T12:00:00", "2025-01-02T12:00:00")
    assert [n for n, _, _ in run(items, keep_13weekly=-1)] == ["2025-01-02T12:00:00", "2024-12-29T12:00:00"]
    assert [n for n, _, _ in run(items, keep_3monthly=-1)] == ["2025-01-02T12:00:00", "2024-12-30T12:00:00"]
    assert run(items, keep_13weekly=1) == [("2025-01-02T12:00:00", "quarterly_13weekly", 1)]


def test_13weekly_quarters_are_weeks_1_13_14_26_27_39_and_40_on() -> None:
    """2020: W39 ends Sunday Sep 27, W40 starts Monday Sep 28; W53 (Dec 31) is still the fourth quarter."""
    items = archives("2020-09-27T12:00:00", "2020-09-28T12:00:00", "2020-12-31T12:00:00")
    assert [n for n, _, _ in run(items, keep_13weekly=-1)] == ["2020-12-31T12:00:00", "2020-09-27T12:00:00"]
    assert [n for n, _, _ in run(items, keep_3monthly=-1)] == ["2020-12-31T12:00:00", "2020-09-28T12:00:00"]
    items = archives("2024-03-31T12:00:00", "2024-04-01T12:00:00")  # Sunday W13 / Monday W14
    assert len(run(items, keep_13weekly=-1)) == 2


def test_month_and_year_boundaries_are_local_time() -> None:
    """23:30 UTC on Jan 31 is already February in Paris; 03:00 UTC on Jan 1 is still December in New York."""
    items = archives("2024-01-31T22:30:00", "2024-01-31T23:30:00", "2024-02-10T12:00:00")
    assert [n for n, _, _ in run(items, PARIS, keep_monthly=-1)] == ["2024-02-10T12:00:00", "2024-01-31T22:30:00"]
    assert [n for n, _, _ in run(items, keep_monthly=-1)] == ["2024-02-10T12:00:00", "2024-01-31T23:30:00"]
    items = archives("2024-01-01T03:00:00", "2024-01-01T06:00:00")
    assert len(run(items, NEW_YORK, keep_yearly=-1)) == 2
    assert len(run(items, keep_yearly=-1)) == 1


# --------------------------------------------------------------------------------------------- DST


def test_repeated_hour_when_paris_clocks_go_back() -> None:
    """2024-10-27: 03:00 CEST → 02:00 CET at 01:00 UTC, so 02:30 happens twice (00:30 and 01:30 UTC).

    Both are in local hour 02; with nothing between them they are even the same local *second* for borg."""
    twice = archives("2024-10-27T00:30:00", "2024-10-27T01:30:00")
    assert run(twice, PARIS, keep_last=-1) == [("2024-10-27T01:30:00", "secondly", 1)]
    assert len(run(twice, keep_last=-1)) == 2
    items = [*twice, *archives("2024-10-26T23:59:00", "2024-10-27T02:00:00")]
    assert [n for n, _, _ in run(items, PARIS, keep_hourly=-1)] == [
        "2024-10-27T02:00:00",  # 03:00 CET
        "2024-10-27T01:30:00",  # 02:30 CET; 02:30 CEST shares its hour
        "2024-10-26T23:59:00",  # 01:59 CEST
    ]


def test_a_period_is_a_run_of_equal_keys_not_a_set_of_seen_keys() -> None:
    """Wall clock runs backwards in the repeated hour: 02:15, 02:30 (CEST) then 02:15, 02:30 (CET).
    borg compares each archive with the previous one only, so all four are separate minutes."""
    items = archives("2024-10-27T00:15:00", "2024-10-27T00:30:00", "2024-10-27T01:15:00", "2024-10-27T01:30:00")
    assert len(run(items, PARIS, keep_minutely=-1)) == 4


def test_around_the_spring_forward_gap() -> None:
    """2024-03-31: 02:00 CET → 03:00 CEST at 01:00 UTC; local hour 02 never exists, 01:59:59 and 03:00 are one
    second apart but in different hours, and 00:30 CET on the 31st is still the 30th in UTC."""
    items = archives("2024-03-30T23:30:00", "2024-03-31T00:59:59", "2024-03-31T01:00:00", "2024-03-31T01:30:00")
    assert [n for n, _, _ in run(items, PARIS, keep_hourly=-1)] == [
        "2024-03-31T01:30:00",  # 03:30 CEST
        "2024-03-31T00:59:59",  # 01:59:59 CET
        "2024-03-30T23:30:00",  # 00:30 CET
    ]
    assert len(run(items, PARIS, keep_daily=-1)) == 1
    assert len(run(items, keep_daily=-1)) == 2


# --------------------------------------------------------------------------------------------- ties, order


def test_equal_times_order_by_name_descending_whatever_the_input_order() -> None:
    """borg's manifest is sorted by name, then by time, then reversed: at equal times the greater name is newer."""
    moment = utc("2024-01-01T10:00:00")
    items = [Archive(name, moment) for name in ("b", "a", "é", "c")]
    random.Random(1).shuffle(items)
    decisions = decide(items, Policy(keep_last=2), ZoneInfo("UTC"), now=NOW)
    assert [d.name for d in decisions] == ["é", "c", "b", "a"]
    assert kept(decisions) == [("é", "secondly", 1), ("a", "secondly[oldest]", 2)]


def test_decisions_are_newest_first_with_times() -> None:
    items = archives("2024-01-02T00:00:00", "2024-01-03T00:00:00", "2024-01-01T00:00:00")
    decisions = decide(items, Policy(keep_daily=1), ZoneInfo("UTC"), now=NOW)
    assert [d.time for d in decisions] == [utc("2024-01-03T00:00:00"), utc("2024-01-02"), utc("2024-01-01")]
    assert decisions[1] == Decision("2024-01-02T00:00:00", utc("2024-01-02"), keep=False, rule=None, rank=None)


def test_microseconds_do_not_split_a_second() -> None:
    base = utc("2024-01-01T10:00:00")
    items = [Archive("a", base + timedelta(microseconds=1)), Archive("b", base + timedelta(microseconds=999_999))]
    assert kept(decide(items, Policy(keep_last=-1), ZoneInfo("UTC"), now=NOW)) == [("b", "secondly", 1)]


# --------------------------------------------------------------------------------------------- checkpoints


def test_newest_checkpoint_is_kept_and_checkpoints_never_count() -> None:
    items = [
        Archive("x.checkpoint", utc("2024-01-03T00:00:00")),
        Archive("w.checkpoint.2", utc("2024-01-02T12:00:00")),
        Archive("v", utc("2024-01-02T00:00:00")),
        Archive("u.checkpointy", utc("2024-01-01T00:00:00")),  # not a checkpoint name
    ]
    assert kept(decide(items, Policy(keep_daily=2), ZoneInfo("UTC"), now=NOW)) == [
        ("x.checkpoint", "checkpoint", None),
        ("v", "daily", 1),
        ("u.checkpointy", "daily", 2),
    ]
    newer = [*items, Archive("y", utc("2024-01-04T00:00:00"))]
    assert [n for n, _, _ in kept(decide(newer, Policy(keep_last=1), ZoneInfo("UTC"), now=NOW))] == ["y"]


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        (Policy(), "keeps nothing"),
        (Policy(keep_daily=0, keep_weekly=0), "keeps nothing"),
        (Policy(keep_within="3x"), "not a borg interval"),
        (Policy(keep_within="0d", keep_daily=1), "greater than 0"),
        (Policy(keep_13weekly=4, keep_3monthly=4), "not both"),
        (Policy(keep_last=3, keep_secondly=5), "same borg option"),
    ],
)
def test_what_borg_refuses_is_refused_by_validate_and_decide(policy: Policy, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        validate(policy)
    with pytest.raises(ValueError, match=words):
        decide([], policy, ZoneInfo("UTC"), now=NOW)


def test_negative_counts_are_refused_by_validate_but_follow_borg_in_decide() -> None:
    policy = Policy(keep_daily=7, keep_monthly=-1)
    with pytest.raises(ValueError, match=r"keep-monthly is negative"):
        validate(policy)
    items = archives("2024-01-01T00:00:00", "2024-02-01T00:00:00", "2024-03-01T00:00:00")
    assert len(run(items, keep_monthly=-1)) == 3


def test_sensible_policies_pass_validation() -> None:
    validate(Policy(keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=1))
    validate(Policy(keep_within="2d"))
    validate(Policy(keep_last=3, keep_secondly=3))


def test_unusable_archive_data_is_refused() -> None:
    with pytest.raises(ValueError, match="without a time zone"):
        decide([Archive("a", datetime(2024, 1, 1))], Policy(keep_daily=1), ZoneInfo("UTC"))
    twice = [Archive("a", utc("2024-01-01")), Archive("a", utc("2024-01-02"))]
    with pytest.raises(ValueError, match="more than once"):
        decide(twice, Policy(keep_daily=1), ZoneInfo("UTC"))


def test_empty_archive_list() -> None:
    assert decide([], Policy(keep_daily=3), ZoneInfo("UTC"), now=NOW) == []


# --------------------------------------------------------------------------------------------- wording


@pytest.mark.parametrize(
    ("policy", "summary"),
    [
        (Policy(keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=1), "7 daily, 4 weekly, 6 monthly, 1 yearly"),
        (Policy(keep_within="2d", keep_last=3), "all archives of the last 2 days, last 3"),
        (Policy(keep_within="1H", keep_13weekly=4), "all archives of the last 1 hour, 4 quarterly (13-week)"),
        (Policy(keep_3monthly=8, keep_hourly=24), "24 hourly, 8 quarterly (3-month)"),
        (Policy(), "nothing"),
    ],
)
def test_policy_summary(policy: Policy, summary: str) -> None:
    assert policy_summary(policy) == summary


def test_to_dict_lists_only_options_in_use() -> None:
    assert Policy(keep_within="2d", keep_daily=7).to_dict() == {"keep_within": "2d", "keep_daily": 7}


# --------------------------------------------------------------------------------------------- CLI


def preview(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], lines: list[str], *args: str):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    code = main(["--env-file", "/nonexistent/.env", "retention", "preview", *args, "--archives", "-"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], " ".join(err.split())


def test_cli_preview_reads_local_times_in_tz(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    lines = [
        json.dumps({"name": "late", "time": "2024-01-31T23:30:00"}),  # Paris wall clock
        "",
        json.dumps({"name": "feb", "time": "2024-02-01T00:30:00+01:00"}),
        json.dumps({"name": "utc", "time": "2024-01-31T21:00:00Z"}),
    ]
    code, rows, err = preview(monkeypatch, capsys, lines, "--keep-daily", "5", "--tz", "Europe/Paris")
    assert (code, err) == (0, "")
    assert rows == [
        {"name": "feb", "keep": True, "rule": "daily", "rank": 1},
        {"name": "late", "keep": True, "rule": "daily", "rank": 2},
        {"name": "utc", "keep": True, "rule": "daily[oldest]", "rank": 3},
    ]


def test_cli_default_zone_is_the_machines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Without --tz, TZ decides: 18:00 and 19:00 UTC are two days in Kolkata (+05:30), one in UTC."""
    lines = [json.dumps({"name": n, "time": t}) for n, t in (("a", "2024-01-01T18:00Z"), ("b", "2024-01-01T19:00Z"))]
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    _, rows, _ = preview(monkeypatch, capsys, lines, "--keep-daily", "9")
    assert [r["rule"] for r in rows] == ["daily", "daily"]
    monkeypatch.setenv("TZ", "UTC")
    _, rows, _ = preview(monkeypatch, capsys, lines, "--keep-daily", "9")
    assert [r["rule"] for r in rows] == ["daily", "daily[oldest]"]


@pytest.mark.parametrize(
    ("lines", "args", "words"),
    [
        (['{"name": "a", "time": "2024-01-01T00:00:00Z"}', "{oops"], ["--keep-daily", "1"], "Line 2 is not valid JSON"),
        (['{"name": "a"}'], ["--keep-daily", "1"], "Line 1: time None is not an ISO-8601"),
        (['{"name": "a", "time": "yesterday"}'], ["--keep-daily", "1"], "Line 1: time 'yesterday'"),
        (["[1, 2]"], ["--keep-daily", "1"], 'Line 1 needs a JSON object with a non-empty "name"'),
        (['{"name": "a", "time": "2024-03-31T02:30:00"}'], ["--keep-daily", "1", "--tz", "Europe/Paris"], "skip"),
        ([], ["--keep-daily", "1", "--tz", "Mars/Olympus"], "Unknown time zone 'Mars/Olympus'"),
        ([], ["--keep-daily", "1", "--tz", "Europe"], "Unknown time zone 'Europe'"),
        ([], [], "keeps nothing"),
        ([], ["--keep-within", "2x"], "not a borg interval"),
        ([], ["--keep-weekly", "-2"], "keep-weekly is negative"),
        ([], ["--keep-13weekly", "1", "--keep-3monthly", "1"], "not both"),
        (['{"name": "a", "time": "2024-01-01T00:00Z"}'] * 2, ["--keep-daily", "1"], "'a' appears more than once"),
    ],
)
def test_cli_refuses_bad_input_with_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, lines: list[str], args: list[str], words: str
) -> None:
    code, rows, err = preview(monkeypatch, capsys, lines, *args)
    assert code == 2
    assert rows == []
    assert words in err
    assert "Traceback" not in err


def test_cli_reports_an_unreadable_file(capsys: pytest.CaptureFixture, tmp_path) -> None:
    code = main(["retention", "preview", "--keep-daily", "1", "--archives", str(tmp_path / "missing.jsonl")])
    assert code == 2
    assert "Cannot read" in capsys.readouterr().err


def test_cli_reads_a_file(capsys: pytest.CaptureFixture, tmp_path) -> None:
    path = tmp_path / "archives.jsonl"
    path.write_text('{"name": "a", "time": "2024-01-01T00:00:00+00:00"}\n', encoding="utf-8")
    assert main(["retention", "preview", "--keep-within", "1y", "--tz", "UTC", "--archives", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "a", "keep": False, "rule": None, "rank": None}
