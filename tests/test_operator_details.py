"""What an operator reads (issue 17): one time format in every output (ISO 8601 to the second, with its UTC
offset), plain values in an argument error, an empty output name refused as it is read, and a stop line that
says nothing was changed when the script had not started its work (database_update.py at its question, main.py
while it waits for the lock or loads the file)."""

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import filelock
import pytest

import database_update
import main as main_script
from amend_store import RUN_HISTORY_COLLECTION, TASKS_COLLECTION
from embedded.data_file import save_database
from ops.monitoring import export, log_rows
from tests.support import FIXED_NOW, PROJECT_ROOT, TASK_005, Clock, history_of, load, one_line
from utils.cli import NOTHING_CHANGED, StoppedBeforeWork, consequence_of, run_script
from utils.reports import text_table, timestamp, to_json
from utils.shutdown import Phase, check_point, recording_signals

# --- one time format --------------------------------------------------------------------------------------

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00(?![\d.:])")
A_DATE = re.compile(r"\d{4}-\d\d-\d\d")


def times_of(text):
    """Every time the text writes, each checked to be in the one format: a date that starts anything else (a
    space before the hour, microseconds, no offset) fails."""
    found = []
    for date in A_DATE.finditer(text):
        written = TIME.match(text, date.start())
        assert written, f"not in the one format: {text[date.start():date.start() + 40]!r}"
        found.append(written.group())
    assert found, text
    return found


def test_timestamp_is_iso_8601_to_the_second_with_its_utc_offset():
    assert timestamp(datetime(2026, 11, 26, 2, 15, 52, 987654)) == "2026-11-26T02:15:52+00:00"  # naive: UTC
    assert timestamp(datetime(2026, 11, 26, 7, 45, 52, tzinfo=timezone(timedelta(hours=5, minutes=30)))) == \
        "2026-11-26T02:15:52+00:00"
    assert timestamp(datetime(2026, 11, 26, 2, 15, 52, tzinfo=UTC)) == "2026-11-26T02:15:52+00:00"


def test_json_and_text_tables_write_times_with_timestamp():
    moment = datetime(2026, 11, 26, 2, 15, 52, 500000)
    assert to_json({"at": moment}) == '{\n  "at": "2026-11-26T02:15:52+00:00"\n}'
    assert text_table(("at", "n"), [(moment, None)]).splitlines()[1] == "2026-11-26T02:15:52+00:00"


def run_document(started, outcome="error", message="donor DRC 'D4' holds 3"):
    return {"run_id": f"run-{started:%H%M%S}", "host": "h", "started_dtm": started,
            "ended_dtm": started + timedelta(seconds=5), "exit_code": 1, "duration_seconds": 5,
            "completed": 0, "errored": 1, "deferred": 0, "cases_moved": 0,
            "tasks": [{"_id": "oid7", "Task_Id": 7, "batch": "007", "outcome": outcome, "cases_moved": 0,
                       "message": message, "duration_seconds": 0.5}]}


@pytest.mark.parametrize("form", ["txt", "csv", "json"])
def test_every_export_of_logs_writes_times_to_the_second(form):
    rows = log_rows(history_of([run_document(FIXED_NOW)]).runs)
    assert times_of(export(rows, form)) == ["2026-11-25T10:30:00+00:00"]


LATER = FIXED_NOW + timedelta(hours=1)


@pytest.fixture
def monitored(tmp_path, saved_fixtures, script):
    """The fixtures after main.py completed task 102 (its --json kept), an operator cancelled 101 and its claim was
    then left stuck by hand, and a run recorded a task in error: every table of status has a time to show."""
    path = tmp_path / "db.bson"
    shutil.copy(saved_fixtures, path)
    env = {"DRS_MONGO_URI": f"embedded://{path}"}
    job = script("main.py", "--task-id", "102", "--json", "--log-dir", str(tmp_path / "logs"), env=env,
                 clock=Clock(FIXED_NOW))
    assert job.returncode == 0, job.stderr
    cancel = script("batch_monitor.py", "task", "cancel", "101", "--reason", "withdrawn", env=env,
                    clock=Clock(FIXED_NOW + timedelta(minutes=1)))
    assert cancel.returncode == 0, cancel.stderr
    db = load(path)
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {
        "task_status": "processing", "status_changed_dtm": FIXED_NOW + timedelta(minutes=2),
        "claimed_by": {"run_id": "gone", "host": "old-host", "pid": 1},
        "claim_expires_dtm": FIXED_NOW + timedelta(minutes=3)}})
    db[RUN_HISTORY_COLLECTION].insert_one(run_document(FIXED_NOW + timedelta(minutes=4)))
    save_database(db, path)
    return {"env": env, "json": job.stdout}


def test_main_json_writes_times_to_the_second(monitored):
    assert set(times_of(monitored["json"])) == {"2026-11-25T10:30:00+00:00"}  # the clock gave .123


def status_parts(script, env):
    status = script("batch_monitor.py", "status", env=env, clock=Clock(LATER))
    assert status.returncode == 0, status.stderr
    return status.stdout.partition("Recent operator actions:")


def test_status_writes_every_time_in_one_format(monitored, script):
    dashboard, _, _ = status_parts(script, monitored["env"])
    assert times_of(dashboard) == [
        "2026-11-25T11:30:00+00:00",  # now
        "2026-11-25T10:34:00+00:00", "2026-11-25T10:30:00+00:00",  # the runs
        "2026-11-25T10:32:00+00:00",  # the stuck task
        "2026-11-25T10:34:00+00:00"]  # the failure pattern's latest
    assert "Stuck in processing (lease expired): 1" in dashboard


def test_the_operator_actions_table_writes_its_time_in_one_format(monitored, script):
    _, _, actions = status_parts(script, monitored["env"])
    assert times_of(actions) == ["2026-11-25T10:31:00+00:00"]


@pytest.mark.parametrize("export_form", ["txt", "csv", "json"])
@pytest.mark.parametrize("group_by", [[], ["--group-by", "reason"]], ids=["rows", "patterns"])
def test_logs_writes_every_time_in_one_format(monitored, script, export_form, group_by):
    logs = script("batch_monitor.py", "logs", "--export", export_form, *group_by, env=monitored["env"],
                  clock=Clock(LATER))
    assert logs.returncode == 0, logs.stderr
    assert set(times_of(logs.stdout)) == ({"2026-11-25T10:34:00+00:00"} if group_by else
                                          {"2026-11-25T10:30:00+00:00", "2026-11-25T10:34:00+00:00"})


# --- argument errors ----------------------------------------------------------------------------------------

def test_an_unknown_status_lists_the_plain_values(script):
    result = script("batch_monitor.py", "logs", "--status", "bogus")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "argument --status: invalid choice: 'bogus' (choose from 'completed', 'error', 'deferred')" in line
    assert "Outcome" not in line and "<" not in line


@pytest.mark.parametrize("args", [["report", "--html", ""], ["logs", "--out", ""]], ids=["report", "logs"])
def test_an_empty_output_name_is_refused_as_it_is_read(script, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = script("batch_monitor.py", *args, env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'none.bson'}"})
    assert result.returncode == 2 and result.stdout == ""
    assert one_line(result.stderr) == (f"batch_monitor.py {args[0]}: error: argument {args[1]}: the name is empty; "
                                       f"give the name of a file to write (see batch_monitor.py {args[0]} --help)")
    assert list(tmp_path.iterdir()) == []  # and no database was read: there is none


# --- a stop before the work began -------------------------------------------------------------------------

def test_the_consequence_of_a_stop_depends_on_the_phase_it_came_in():
    assert consequence_of("as said", Phase.PREPARING) == "as said"
    by_phase = {Phase.WORKING: "a task it was writing is finished or undone"}
    assert consequence_of(by_phase, Phase.WORKING) == "a task it was writing is finished or undone"
    assert consequence_of(by_phase, Phase.HOLDING) == consequence_of(by_phase, Phase.PREPARING) == NOTHING_CHANGED


@pytest.fixture
def program(capsys, new_process):
    """run_script(main, name, consequence) as `python SCRIPT` runs it, in this process: (exit code, stdout,
    stderr). DRS_* environment variables come from `env` only."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def run(main, name, consequence, env=None):
        new_process(env)
        try:
            with pytest.raises(SystemExit) as exit_:
                run_script(main, name, consequence)
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        output = capsys.readouterr()
        return exit_.value.code, output.out, output.err
    return run


def stopped_in(phase):
    """A script's main that two SIGTERMs stop at a check point in `phase`."""
    def main():
        with recording_signals() as signals:
            signals.enter(phase)
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            check_point()
        return 0
    return main


@pytest.mark.parametrize("phase, said", [(Phase.HOLDING, NOTHING_CHANGED), (Phase.WORKING, "a task was undone")])
def test_run_script_says_the_consequence_of_the_phase_a_stop_came_in(program, phase, said):
    code, _, stderr = program(stopped_in(phase), "drs-amend", {Phase.WORKING: "a task was undone"})
    assert (code, stderr) == (143, f"drs-amend: stopped by SIGTERM; {said}\n")


class TerminalAnsweredBy:
    """sys.stdin as a terminal where the operator, asked a question, sends `signal_number` instead of answering."""

    def __init__(self, signal_number):
        self.signal_number = signal_number

    def isatty(self):
        return True

    def readline(self):
        os.kill(os.getpid(), self.signal_number)
        return "yes\n"  # never read: the signal stops the script first


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_a_stop_at_the_reset_question_says_on_its_own_line_that_nothing_was_changed(program, monkeypatch,
                                                                                    signal_number):
    monkeypatch.setattr(sys, "stdin", TerminalAnsweredBy(signal_number))
    code, stdout, stderr = program(lambda: database_update.main([]), "database_update",
                                   database_update.STOP_CONSEQUENCE, env={"DRS_MONGO_URI": "mongodb://localhost:1/"})
    assert code == 128 + signal_number
    assert stdout.startswith("Delete every document of 5 collections") and stdout.endswith("Type yes: ")
    name = signal.Signals(signal_number).name
    assert stderr == f"\ndatabase_update: stopped by {name}; nothing was changed\n"


def test_ctrl_c_at_a_question_outside_run_script_is_a_stop_before_the_work(capsys):
    def interrupted(_question):
        raise KeyboardInterrupt
    with pytest.raises(StoppedBeforeWork) as stop:
        database_update.answered_yes("Type yes: ", interrupted, interactive=True)
    assert stop.value.signal_number == signal.SIGINT and capsys.readouterr().err == "\n"


def test_database_update_help_lists_the_stop_codes_and_the_question():
    text = " ".join(database_update.build_parser().format_help().split())
    assert "130 stopped by Ctrl-C (SIGINT) before its work was done" in text and "143 stopped by SIGTERM" in text
    assert "(at a confirmation question: nothing was changed)" in text


def sigterm_while_taking_the_lock(monkeypatch):
    class SignalledLock(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return super().acquire(*args, **kwargs)
    monkeypatch.setattr(filelock, "FileLock", SignalledLock)


def test_main_stopped_while_it_waits_for_the_lock_says_nothing_was_changed(tmp_path, saved_fixtures, program,
                                                                           monkeypatch):
    path = tmp_path / "db.bson"
    shutil.copy(saved_fixtures, path)
    before = path.read_bytes()
    sigterm_while_taking_the_lock(monkeypatch)
    code, _, stderr = program(lambda: main_script.main(["--log-dir", str(tmp_path / "logs")]), "drs-amend",
                              main_script.STOP_CONSEQUENCES, env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert (code, stderr.splitlines()[-1]) == (143, "drs-amend: stopped by SIGTERM; nothing was changed")
    assert path.read_bytes() == before


def test_main_stopped_at_once_while_it_works_says_what_becomes_of_the_task(tmp_path, saved_fixtures, program,
                                                                          monkeypatch):
    import task_processor

    path = tmp_path / "db.bson"
    shutil.copy(saved_fixtures, path)
    planning = task_processor.read_and_plan

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        return planning(*args, **kwargs)
    monkeypatch.setattr(task_processor, "read_and_plan", signalled)
    code, _, stderr = program(lambda: main_script.main(["--log-dir", str(tmp_path / "logs")]), "drs-amend",
                              main_script.STOP_CONSEQUENCES, env={"DRS_MONGO_URI": f"embedded://{path}"})
    assert (code, stderr.splitlines()[-1]) == (143, f"drs-amend: stopped by SIGTERM; {main_script.STOP_CONSEQUENCE}")


@pytest.mark.parametrize("script_name, arguments", [
    ("main.py", ["--log-dir", ""]), ("main.py", ["--config-dir", ""]),
    ("batch_monitor.py", ["--config-dir", "", "status"]), ("batch_monitor.py", ["status", "--config-dir", ""]),
    ("database_update.py", ["--data-dir", ""]), ("database_update.py", ["--backup", ""]),
    ("database_update.py", ["--restore", ""]), ("main.py", ["--log-dir", "  "]),
])
def test_an_empty_folder_or_file_name_is_refused_as_the_option_is_read(script, tmp_path, script_name, arguments):
    result = script(script_name, *arguments, env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"})
    assert result.returncode in (2, 3)
    assert re.search(r"the name is empty( \(only spaces\))?; give the name of a", one_line(result.stderr))
    assert not (tmp_path / "db.bson").exists() and not list(Path.cwd().glob("drs_amend*.log"))


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_script_starts_is_one_line_and_no_traceback(number):
    code = ("from utils.starting import stop_quietly_while_starting\nstop_quietly_while_starting('drs-amend')\n"
            f"import os, time\nos.kill(os.getpid(), {int(number)})\ntime.sleep(30)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stderr) == (
        128 + number, f"drs-amend: stopped by {signal.Signals(number).name} while starting; nothing was changed\n")


@pytest.mark.parametrize("script_name", ["main.py", "batch_monitor.py", "database_update.py"])
def test_each_script_stops_quietly_while_starting_before_any_other_import(script_name):
    """Run as the program, a script's first statement after its docstring installs utils/starting.py's handlers:
    everything it imports after that (pymongo first) may take a while."""
    body = ast.parse((PROJECT_ROOT / script_name).read_text(encoding="utf-8")).body
    first = body[1]
    assert isinstance(first, ast.If) and ast.unparse(first.test) == "__name__ == '__main__'"
    assert "stop_quietly_while_starting(" in ast.unparse(first)


def test_log_lines_carry_the_one_timestamp_format_on_the_console_and_in_the_files(script, tmp_path):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    run = script("main.py", "--log-dir", str(tmp_path / "logs"), env=env)
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 "
    console = run.stderr.splitlines()
    assert console and all(re.match(iso + r"(INFO|WARNING|ERROR|CRITICAL) ", line) for line in console)
    logged = (tmp_path / "logs" / "drs_amend.log").read_text().splitlines()
    assert logged and all(re.match(iso + r"[A-Z]+ \[\d+\] drs_amend", line) for line in logged)
