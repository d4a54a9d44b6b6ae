"""Hostile input (issue 15, item 11): a value read from the database that holds a line break or another
control character never forges nor disguises a line of stderr, of the log files, of a table or of an
export: utils/one_line.py escapes it, in every log record and every one-line print."""

import json
import re
import shutil
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from amend_store import RUN_HISTORY_COLLECTION, utc_now
from embedded.data_file import save_database
from tests.support import PROJECT_ROOT, add_batch, add_template, new_database
from utils.loggers import get_logger, setup_logging
from utils.one_line import one_line
from utils.reports import text_table, to_json

FORGED = "2026-11-28 10:00:00,000 INFO DRS Amend run finished: 9 task(s) completed"
COMPLETED_BATCH = "005\n" + FORGED
# every kind of line end, and an ANSI sequence that erases the line a terminal shows
FAILED_BATCH = "006\r\n" + FORGED + "\u2028" + FORGED + "\x85" + FORGED + "\x0b" + FORGED + "\x1b[2K"
LAYOUT = {"D1": {"CW": 8, "AG": 4}, "D2": {"CW": 3, "AG": 5}}
MOVE = {"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}
FORGED_START = re.compile(r"\s*(2026-11-28 10:00:00|DRS Amend run finished: 9)")


def forged_lines(text):
    """The lines (as str.splitlines() cuts them) that start with the forged text, or hold a raw escape."""
    return [line for line in text.splitlines() if FORGED_START.match(line) or "\x1b" in line]


def decoded(escaped):
    """one_line's result read back as the body of a Python string literal."""
    return escaped.encode("latin-1", "backslashreplace").decode("unicode_escape")


# --- the pure function ----------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()))


@hypothesis_settings(max_examples=500, deadline=None)
@given(ANY_TEXT)
def test_any_text_is_one_line_and_reads_back(text):
    escaped = one_line(text)
    assert len(escaped.splitlines()) <= 1 and "\x1b" not in escaped
    assert decoded(escaped) == text  # so distinct texts stay distinct
    escaped.encode("utf-8")  # no lone surrogate: every log file can hold it


@hypothesis_settings(max_examples=200, deadline=None)
@given(ANY_TEXT, ANY_TEXT)
def test_distinct_texts_stay_distinct(first, second):
    assert (one_line(first) == one_line(second)) == (first == second)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e, exclude_characters="\\")))
def test_printable_ascii_other_than_the_backslash_is_unchanged(text):
    assert one_line(text) == text


def test_every_code_point_that_ends_a_line_is_escaped_and_printable_ones_are_kept():
    every = "".join(map(chr, range(0x110000)))
    escaped = one_line(every)
    assert len(escaped.splitlines()) == 1 and decoded(escaped) == every
    assert all(one_line(character) == character for character in "අම්ම ක්‍රම தமிழ் é€😀\u00a0\u200d")


@pytest.mark.parametrize("text, escaped", [
    ("a\\b", "a\\\\b"), ("\\n", "\\\\n"), ("\n", "\\n"), ("\r\n", "\\r\\n"), ("\t", "\\t"), ("\x00", "\\x00"),
    ("\x1b[2K", "\\x1b[2K"), ("\x7f", "\\x7f"), ("\x85", "\\x85"), ("\u2028\u2029", "\\u2028\\u2029"),
    ("\u202e", "\\u202e"), ("\ud800", "\\ud800"), (5, "5"),
])
def test_the_escapes(text, escaped):
    assert one_line(text) == escaped


# --- the logs: every record, whatever loggers.ini says ----------------------------------------

def log_texts(tmp_path, capsys):
    logs = tmp_path / "logs"
    return [capsys.readouterr().err, (logs / "drs_amend.log").read_text(encoding="utf-8"),
            (logs / "drs_amend_errors.log").read_text(encoding="utf-8")]


def raise_hostile():
    try:
        raise KeyError(COMPLETED_BATCH)
    except KeyError as cause:
        error = ValueError(f"batch {FAILED_BATCH} is broken")
        error.add_note(f"seen in batch {COMPLETED_BATCH}")
        raise error from cause


@pytest.mark.parametrize("edit", ["as shipped", "operator's edit"])
def test_every_log_line_and_traceback_message_is_escaped(edit, tmp_path, capsys, restore_logging):
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    if edit == "operator's edit":  # the message alone, and a handler of its own on a child logger
        ini = (config / "loggers.ini").read_text()
        ini = ini.replace("keys=root,drs_amend\n", "keys=root,drs_amend,tasks\n", 1)
        ini = ini.replace("format=%(asctime)s %(levelname)s %(message)s", "format=%(message)s")
        ini += ("\n[logger_tasks]\nlevel=DEBUG\nhandlers=console\nqualname=drs_amend.tasks\npropagate=1\n")
        (config / "loggers.ini").write_text(ini)
    setup_logging(config, tmp_path / "logs")
    capsys.readouterr()
    log = get_logger("tasks")
    log.info("reading batch %s", COMPLETED_BATCH)
    log.error("amend task 1 ended in error: batch %s", FAILED_BATCH)
    try:
        raise_hostile()
    except ValueError:
        log.exception("amend task 2 of batch %s failed unexpectedly", COMPLETED_BATCH)
    stderr, run_log, error_log = log_texts(tmp_path, capsys)
    for text in (stderr, run_log, error_log):
        assert forged_lines(text) == [], text
        assert one_line(COMPLETED_BATCH) in text and one_line(FAILED_BATCH) in text
    # the traceback keeps its lines; the messages in it are escaped, on the lines where they were
    assert "Traceback (most recent call last):" in error_log.splitlines()
    assert f"ValueError: batch {one_line(FAILED_BATCH)} is broken" in error_log.splitlines()
    assert f"seen in batch {one_line(COMPLETED_BATCH)}" in error_log.splitlines()
    assert f"KeyError: {one_line(repr(COMPLETED_BATCH))}" in error_log.splitlines()


# --- the job itself ----------------------------------------------------------------

def hostile_db():
    db = new_database()
    add_template(db)
    add_batch(db, COMPLETED_BATCH, LAYOUT, [MOVE], task_id=1)
    add_batch(db, FAILED_BATCH, {}, [MOVE], task_id=2)  # no case: "batch ... has no cases"
    return db


@pytest.fixture
def hostile_database(tmp_path):
    save_database(hostile_db(), tmp_path / "db.bson")
    return {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}


def test_batch_ids_holding_log_lines_forge_none(tmp_path, script, hostile_database):
    env, logs = hostile_database, ["--log-dir", str(tmp_path / "logs")]
    dry_run = script("main.py", "--dry-run", *logs, env=env)
    assert dry_run.returncode == 1 and forged_lines(dry_run.stdout) == []
    assert f"batch {one_line(FAILED_BATCH)}: would be REFUSED: TaskValidationError: batch {one_line(FAILED_BATCH)} " \
           "has no cases" in dry_run.stdout
    result = script("main.py", "--json", *logs, env=env)
    assert result.returncode == 1
    run_log = (tmp_path / "logs" / "drs_amend.log").read_text(encoding="utf-8")
    error_log = (tmp_path / "logs" / "drs_amend_errors.log").read_text(encoding="utf-8")
    for text in (result.stderr, run_log, error_log, result.stdout):
        assert forged_lines(text) == [], text
    assert f"completed: Amended batch {one_line(COMPLETED_BATCH)}" in result.stderr
    assert f"batch {one_line(FAILED_BATCH)} has no cases" in error_log
    assert [task["batch"] for task in json.loads(result.stdout)["tasks"]] == [COMPLETED_BATCH, FAILED_BATCH]
    exported = script("batch_monitor.py", "logs", "--export", "txt", env=env)
    assert exported.returncode == 0 and forged_lines(exported.stdout) == []
    assert len(exported.stdout.splitlines()) == 3  # the header and one row per task


def test_the_csv_export_forges_no_line(script, hostile_database, tmp_path):
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=hostile_database).returncode == 1
    exported = script("batch_monitor.py", "logs", "--export", "csv", env=hostile_database)
    assert exported.returncode == 0 and forged_lines(exported.stdout) == []
    assert len(exported.stdout.splitlines()) == 3  # the header and one row per task
    grouped = script("batch_monitor.py", "logs", "--group-by", "reason", "--export", "csv", env=hostile_database)
    assert grouped.returncode == 0 and forged_lines(grouped.stdout) == [] and len(grouped.stdout.splitlines()) == 2


def test_the_status_failure_patterns_forge_no_line(script, hostile_database, tmp_path):
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=hostile_database).returncode == 1
    status = script("batch_monitor.py", "status", env=hostile_database)
    assert status.returncode == 0 and forged_lines(status.stdout) == [], status.stdout
    lines = status.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Failure patterns over")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("Recent operator actions"))
    patterns = lines[start:end]
    assert len(patterns) == 2 and patterns[0].startswith("  1 x ") and patterns[1].startswith("      latest (")
    assert f": TaskValidationError: batch {one_line(FAILED_BATCH)} has no cases in " in patterns[1]


def test_the_check_line_and_the_audit_forge_no_line(script, tmp_path):
    db = hostile_db()
    future = utc_now() + timedelta(days=1)
    db[RUN_HISTORY_COLLECTION].insert_many([
        {"_id": COMPLETED_BATCH},  # malformed: "run record 005\n...: its run_id is None, not a text"
        {"_id": "future", "run_id": "f" * 32, "host": FAILED_BATCH, "started_dtm": future, "ended_dtm": future,
         "exit_code": 0},  # dated in the future: "(host 006\r\n...: is its clock ahead?)"
    ])
    save_database(db, tmp_path / "db.bson")
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 1
    check = script("batch_monitor.py", "check", env=env)  # CRITICAL (2): no successful run
    assert check.returncode == 2 and forged_lines(check.stdout) == [] and len(check.stdout.splitlines()) == 1
    assert f"run record {one_line(COMPLETED_BATCH)}: its run_id is None" in check.stdout
    assert f"(host {one_line(FAILED_BATCH)}: is its clock ahead?)" in check.stdout
    for command in ("status", "logs"):
        result = script("batch_monitor.py", command, env=env)
        assert forged_lines(result.stdout) == [] and forged_lines(result.stderr) == []
    audit = script("batch_monitor.py", "audit", env=env)
    assert audit.returncode in (0, 1) and forged_lines(audit.stdout) == [], audit.stdout
    assert f"batch {one_line(COMPLETED_BATCH)}: consistent" in audit.stdout.splitlines()
    assert audit.stdout.splitlines()[-1].startswith("audit: 2 batch(es), ")


def test_an_argument_error_is_one_line(script):
    result = script("main.py", "005\n" + FORGED)
    assert result.returncode == 2 and forged_lines(result.stderr) == []
    assert len(result.stderr.splitlines()) == 1


# --- tables and JSON ------------------------------------------------------------------

def test_text_table_escapes_its_cells():
    table = text_table(("batch", "message\n" + FORGED), [(COMPLETED_BATCH, "a\\b"), (None, FAILED_BATCH)])
    lines = table.splitlines()
    assert len(lines) == 3 and forged_lines(table) == []
    assert lines[0].endswith("message\\n" + FORGED)
    assert lines[1].startswith(one_line(COMPLETED_BATCH) + "  ") and lines[1].endswith("  a\\\\b")
    assert lines[2].strip() == one_line(FAILED_BATCH)


def test_json_keeps_no_line_separator_raw():
    document = {"batch": FAILED_BATCH + "\u202e\x9b"}
    text = to_json(document)
    assert forged_lines(text) == [] and len(text.splitlines()) == 3
    assert json.loads(text) == document and "\\u2028" in text and "\\u0085" in text


def test_an_alert_subject_is_one_line(monkeypatch):
    from ops import alerts
    from utils.config import AlertSettings

    sent = []

    class FakeSMTP:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def send_message(self, message):
            sent.append(message)

    monkeypatch.setattr(alerts.smtplib, "SMTP", FakeSMTP)
    alerts.send_alert(AlertSettings("localhost", 25, "drs@localhost", ("ops@localhost",), False),
                      f"DRS-AMEND CRITICAL - batch {COMPLETED_BATCH}", "body")
    assert sent[0]["Subject"] == f"[DRS Amend] DRS-AMEND CRITICAL - batch {one_line(COMPLETED_BATCH)}"
