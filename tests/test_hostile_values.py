"""Values beyond what the job can hold (issue 15, items 12 and 13): a transfer_count beyond an Int64, as
text, float or integer, is a refusal naming the field and the limit (never int() on thousands of digits);
every date option of batch_monitor is bounded, and --since must come before --until for logs as for report."""

import math

import pytest
from bson import Decimal128, Int64

from database_checks import parse_transfer_count
from embedded.data_file import save_database
from tests.mutations import assert_task_101_fails_cleanly, set_distribution
from tests.support import one_line
from utils.Custom_Exceptions import TaskValidationError
from utils.documents import INT64_MAX

TOO_LARGE = r"d\.transfer_count must be at most 9223372036854775807 \(2\*\*63-1, the largest Int64\), got "


BEYOND_INT64 = [
    ("5" * 5000, r"'55555555555555555555'\.\.\. \(5000 characters\) \(str\)"),
    ("9" * 20, r"'99999999999999999999' \(str\)"),
    (str(INT64_MAX + 1), r"'9223372036854775808' \(str\)"),
    ("0" * 3 + "1" + "0" * 19, r"'00010000000000000000000' \(str\)"),
    (1e300, r"1e\+300 \(float\)"),
    (2.0**63, r"9\.223372036854776e\+18 \(float\)"),
    (INT64_MAX + 1, r"9223372036854775808 \(int\)"),
    (10**5000, r"an integer of 16610 bits \(int\)"),
]


@pytest.mark.parametrize("value, shown", BEYOND_INT64, ids=[shown[:20] for _, shown in BEYOND_INT64])
def test_a_transfer_count_beyond_an_int64_is_refused_naming_the_field_and_the_limit(value, shown):
    with pytest.raises(TaskValidationError, match=TOO_LARGE + shown):
        parse_transfer_count(value, "d")


@pytest.mark.parametrize("value, expected", [
    (str(INT64_MAX), INT64_MAX), (Int64(INT64_MAX), INT64_MAX), ("0" * 5000 + "7", 7), (2.0**62, 2**62)])
def test_a_transfer_count_up_to_the_largest_int64_is_read(value, expected):
    assert parse_transfer_count(value, "d") == expected


@pytest.mark.parametrize("value", [Decimal128("5"), Decimal128("1E+6000"), Decimal128("NaN"), math.nan])
def test_other_numbers_stay_refused_as_no_integer(value):
    with pytest.raises(TaskValidationError, match=r"d\.transfer_count must be an integer of at least 1, got "):
        parse_transfer_count(value, "d")


def test_a_text_of_thousands_of_digits_ends_its_task_in_error_naming_the_field(db, settings):
    assert_task_101_fails_cleanly(db, settings, set_distribution(transfer_count="5" * 5000),
                                  "array_of_distributions[0].transfer_count must be at most 9223372036854775807", False)


# --- the date options of batch_monitor --------------------------------------------------

@pytest.fixture
def env(tmp_path):
    from tests.support import fresh_db

    save_database(fresh_db(), tmp_path / "db.bson")
    return {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}


OUT_OF_RANGE = ["0001-01-02", "1999-12-31T23:59:59", "9000-01-01T00:00:01", "9999-12-31", "9000-01-01T00:00-00:01",
                "2000-01-01T00:00+00:01", "0001-01-01T00:00+14:00", "9999-12-31T23:59-14:00"]


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("command", ["logs", "report"])
@pytest.mark.parametrize("moment", OUT_OF_RANGE)
def test_a_date_beyond_the_range_is_a_usage_error_naming_the_range(env, tmp_path, script, command, option, moment):
    html = ["--html", str(tmp_path / "page.html")] if command == "report" else []
    result = script("batch_monitor.py", command, *html, option, moment, env=env)
    assert result.returncode == 2, result
    assert f"argument {option}: expected an ISO date from 2000-01-01 to 9000-01-01 (UTC), got {moment!r}" in \
        one_line(result.stderr)
    assert not (tmp_path / "page.html").exists()


def test_the_ends_of_the_range_are_accepted(env, tmp_path, script):
    for period in (["--since", "2000-01-01", "--until", "9000-01-01"], ["--until", "2000-01-29"],
                   ["--until", "2000-01-01T00:00:01"],
                   ["--since", "9000-01-01T00:00+00:01", "--until", "9000-01-01"]):
        report = script("batch_monitor.py", "report", "--html", str(tmp_path / "page.html"), *period, env=env)
        assert report.returncode == 0, (period, report)
        logs = script("batch_monitor.py", "logs", *period, env=env)
        assert logs.returncode == 0, (period, logs)


@pytest.mark.parametrize("since, until", [("2026-11-20", "2026-11-10"), ("2026-11-20T08:00", "2026-11-20T08:00"),
                                          ("2026-11-20T08:00+02:00", "2026-11-20T06:00")])
def test_since_not_before_until_is_refused_by_logs_as_by_report(env, tmp_path, script, since, until):
    logs = script("batch_monitor.py", "logs", "--since", since, "--until", until, env=env)
    report = script("batch_monitor.py", "report", "--html", str(tmp_path / "page.html"), "--since", since, "--until",
                    until, env=env)
    assert logs.returncode == report.returncode == 2
    assert one_line(logs.stderr) == one_line(report.stderr)
    assert one_line(logs.stderr).startswith("batch_monitor: --since (") and "must come before --until" in logs.stderr
    assert logs.stdout == ""

