"""Hostile configuration, options, fixtures and signals (issue 8, items 6 to 9): one clear line, the
right exit code, never a traceback, never a secret, nothing lost."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest

from batch_monitor import main as monitor_main
from database_update import confirmed, read_fixture
from tests.support import PROJECT_ROOT, one_line, uri_with_password
from utils import secrets
from utils.cli import run_script
from utils.config import load_database_settings
from utils.Custom_Exceptions import ConfigurationError, DatabaseUpdateError

LONG_PASSWORD = "Correct" + "Horse" + "-Battery-Staple-9"
SHORT_PASSWORD = "p" + "w"


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch):
    monkeypatch.setattr(secrets, "_secrets", set())


def database_settings(tmp_path, uri):
    (tmp_path / "DB_Config.ini").write_text("[DATABASE]\nMONGO_URI = embedded://x.bson\nDB_NAME = drs\n")
    return load_database_settings(tmp_path, environ={"DRS_MONGO_URI": uri})


# --- item 6: secrets ----------------------------------------------------------------------

@pytest.mark.parametrize("password", [SHORT_PASSWORD, LONG_PASSWORD, "a@" + "b", "Horse@" + "Battery"])
def test_redaction_splits_the_user_information_where_pymongo_does(password):
    uri = uri_with_password("drs", password, "db.example.org:27017/drs?authSource=admin")
    assert secrets.redact_uri(uri) == uri_with_password("drs", "***", "db.example.org:27017/drs?authSource=admin")


@pytest.mark.parametrize("password, character", [("Horse@" + "Battery", "@"), ("Horse/" + "Battery", "/"),
                                                  ("Horse?" + "Battery", "?"), ("Horse:" + "Battery", ":"),
                                                  ("Horse%" + "zz", "%")])
def test_an_unescaped_character_in_the_password_is_one_clear_error_without_the_secret(tmp_path, password,
                                                                                      character):
    with pytest.raises(ConfigurationError) as error:
        database_settings(tmp_path, uri_with_password("drs", password, "db.example.org:27017/drs"))
    message = str(error.value)
    assert f"environment variable DRS_MONGO_URI {uri_with_password('drs', '***', 'db.example.org:27017/drs')!r}" \
           in message
    assert "its password contains" in message and repr(character)[1:-1] in message and "percent-encode" in message
    assert "Horse" not in message and "Battery" not in message


@pytest.mark.parametrize("password", ["Horse@" + "Battery", "Horse/" + "Battery"])
def test_the_scripts_say_so_in_one_line_and_exit_2(tmp_path, password, script):
    env = {"DRS_MONGO_URI": uri_with_password("drs", password, "db.example.org:27017/drs")}
    for name, args, code in (("main.py", ["--log-dir", str(tmp_path / "logs")], 2),
                             ("batch_monitor.py", ["check"], 3)):
        result = script(name, *args, env=env)
        assert result.returncode == code, result.stderr
        output = result.stdout + result.stderr
        assert len(output.strip().splitlines()) == 1 and "Traceback" not in output, output
        assert "Horse" not in output and "Battery" not in output


def test_scrub_hides_the_real_secret_only(tmp_path):
    database_settings(tmp_path, uri_with_password("drs", SHORT_PASSWORD, "db.example.org/"))
    text = f"password of {uri_with_password('drs', SHORT_PASSWORD, 'db.example.org/')} is {SHORT_PASSWORD}; pwd"
    assert secrets.scrub(text) == f"password of {uri_with_password('drs', '***', 'db.example.org/')} is ***; pwd"


def test_scrub_hides_a_long_password_wherever_it_stands_alone(tmp_path):
    database_settings(tmp_path, uri_with_password("drs", LONG_PASSWORD.replace("-", "%2D"), "db.example.org/"))
    assert secrets.scrub(f"auth failed for {LONG_PASSWORD}.") == "auth failed for ***."
    assert secrets.scrub(f"x{LONG_PASSWORD}y") == f"x{LONG_PASSWORD}y"  # another word, not the secret


def test_a_uri_in_any_text_loses_its_password_even_unregistered():
    text = f"error: '{uri_with_password('other', 'Horse@' + 'Battery', 'h:1/')}' refused"
    assert secrets.scrub(text) == f"error: '{uri_with_password('other', '***', 'h:1/')}' refused"


def test_secret_uri_options_are_hidden(tmp_path):
    uri = "mongodb://db.example.org/?tls=true&tlsCertificateKeyFilePassword=" + LONG_PASSWORD
    settings = database_settings(tmp_path, uri)
    assert LONG_PASSWORD not in settings.redacted_uri and "tlsCertificateKeyFilePassword=***" in settings.redacted_uri
    assert secrets.scrub(f"the key password {LONG_PASSWORD} is wrong") == "the key password *** is wrong"


# --- item 7: out-of-range values ------------------------------------------------------------

def config_with(tmp_path, name, text):
    folder = tmp_path / "config"
    if not folder.exists():
        folder.mkdir()
        for source in (PROJECT_ROOT / "config").iterdir():
            (folder / source.name).write_text(source.read_text())
    (folder / name).write_text(text)
    return folder


OUT_OF_RANGE = [
    ("DB_Config.ini", "[DATABASE]\nMONGO_URI = mongodb://db.example.org:99999/\nDB_NAME = d\n",
     "[DATABASE] MONGO_URI 'mongodb://db.example.org:99999/' is not valid: "
     "Port must be an integer between 0 and 65535"),
    ("DB_Config.ini", "[DATABASE]\nMONGO_URI = mongodb://db.example.org:abc/\nDB_NAME = d\n",
     "[DATABASE] MONGO_URI 'mongodb://db.example.org:abc/' is not valid: Port contains non-digit characters"),
    ("DB_Config.ini", "[DATABASE]\nMONGO_URI = mongodb://db.example.org/?journal=maybe\nDB_NAME = d\n",
     "is not valid: The value of journal must be 'true' or 'false'"),
    ("DB_Config.ini", "[DATABASE]\nMONGO_URI = embedded://x\nDB_NAME = d\nSERVER_SELECTION_TIMEOUT_MS = 10000000000\n",
     "[DATABASE] SERVER_SELECTION_TIMEOUT_MS must be at most 600000, got 10000000000"),
    ("DB_Config.ini", "[DATABASE]\nMONGO_URI = embedded://x\nDB_NAME = d\nLOCK_TIMEOUT_SECONDS = 1e10\n",
     "[DATABASE] LOCK_TIMEOUT_SECONDS must be an integer, got '1e10'"),
    ("Job_Settings.ini", "[RECOVERY]\nLEASE_MINUTES = 10000000000\n",
     "[RECOVERY] LEASE_MINUTES must be at most 10080, got 10000000000"),
    ("Job_Settings.ini", "[RECOVERY]\nLEASE_MINUTES = 1e10\n",
     "[RECOVERY] LEASE_MINUTES must be an integer, got '1e10'"),
    ("Job_Settings.ini", "[RECOVERY]\nMAX_CLOCK_SKEW_SECONDS = 86400\n",
     "[RECOVERY] MAX_CLOCK_SKEW_SECONDS must be at most 3600"),
    ("Job_Settings.ini", "[RETRY]\nATTEMPTS = 1e20\n", "[RETRY] ATTEMPTS must be an integer, got '1e20'"),
    ("Job_Settings.ini", "[RETRY]\nATTEMPTS = 100000000000000000000\n", "[RETRY] ATTEMPTS must be at most 100"),
    ("Job_Settings.ini", "[RETRY]\nINITIAL_DELAY_SECONDS = nan\n", "[RETRY] INITIAL_DELAY_SECONDS must be between 0"),
    ("Job_Settings.ini", "[RETRY]\nMAX_DELAY_SECONDS = inf\n", "[RETRY] MAX_DELAY_SECONDS must be between 0"),
    ("Job_Settings.ini", "[BALANCING]\nMIN_SHARE_KEPT = 1e-999999999\n",
     "[BALANCING] MIN_SHARE_KEPT must be a number such as 0.2"),
    ("Job_Settings.ini", "[BALANCING]\nMIN_SHARE_KEPT = nan\n",
     "[BALANCING] MIN_SHARE_KEPT must be a number such as 0.2"),
    ("Set_Template_TaskID.ini", "[TEMPLATE_TASK]\nTEMPLATE_TASK_ID = 100000000000000000000\n",
     "[TEMPLATE_TASK] TEMPLATE_TASK_ID must be at most 9223372036854775807"),
    ("monitor.ini", "[CHECK]\nWINDOW_HOURS = 1000000000\n", "[CHECK] WINDOW_HOURS must be at most 8760"),
    ("monitor.ini", "[CHECK]\nFAILURE_RATE_WARNING = nan\n", "[CHECK] FAILURE_RATE_WARNING must be between 0 and 1"),
    ("monitor.ini", "[CHECK]\nFAILURE_RATE_CRITICAL = 5\n", "[CHECK] FAILURE_RATE_CRITICAL must be between 0 and 1"),
    ("monitor.ini", "[CHECK]\nLAST_SUCCESS_WARNING_HOURS = inf\n",
     "[CHECK] LAST_SUCCESS_WARNING_HOURS must be between"),
    ("monitor.ini", "[CHECK]\nSTUCK_TASKS_WARNING = 5\nSTUCK_TASKS_CRITICAL = 2\n",
     "[CHECK] STUCK_TASKS_WARNING (5) is above STUCK_TASKS_CRITICAL (2)"),
    ("alerts.ini", "[SMTP]\nENABLED = yes\nHOST = h\nPORT = 99999\nSENDER = a@b\nRECIPIENTS = c@d\n",
     "[SMTP] PORT must be at most 65535"),
]


@pytest.mark.parametrize("name, text, message", OUT_OF_RANGE,
                         ids=[f"{name}-{index}" for index, (name, *_) in enumerate(OUT_OF_RANGE)])
def test_an_out_of_range_setting_is_one_line_naming_file_and_key(tmp_path, capsys, name, text, message):
    config = config_with(tmp_path, name, text)
    started = time.monotonic()
    code = monitor_main(["--config-dir", str(config), "check"])
    out, err = capsys.readouterr()
    assert code == 3, out + err
    line = one_line(out + err)
    assert line.startswith("DRS-AMEND UNKNOWN - ") and str(config / name) in line and message in line, line
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("name, text, message", [OUT_OF_RANGE[0], OUT_OF_RANGE[5], OUT_OF_RANGE[10]])
def test_main_says_it_in_one_line_with_exit_2(tmp_path, name, text, message, script):
    config = config_with(tmp_path, name, text)
    result = script("main.py", "--config-dir", str(config), "--log-dir", str(tmp_path / "logs"))
    assert result.returncode == 2 and message in one_line(result.stderr)


@pytest.mark.parametrize("name, args, code, message", [
    ("main.py", ["--task-id", str(10**20)], 2,
     "argument --task-id: expected an integer of at most 9223372036854775807"),
    ("batch_monitor.py", ["status", "--runs", "0"], 2, "argument --runs: expected a positive integer, got 0"),
    ("batch_monitor.py", ["status", "--runs", "-3"], 2, "argument --runs: expected a positive integer, got -3"),
    ("batch_monitor.py", ["logs", "--task-id", str(-10**20)], 2, "argument --task-id: expected an integer of at least"),
    ("batch_monitor.py", ["check", "--bogus"], 3, "unrecognized arguments: --bogus"),
    ("database_update.py", ["--generate", str(10**9)], 2,
     "argument --generate: expected a positive integer of at most"),
    ("database_update.py", ["--generate", "100", "--seed", str(2**64)], 2, "argument --seed: expected an integer of"),
])
def test_an_out_of_range_option_is_one_line_naming_it(name, args, code, message, script):
    result = script(name, *args)
    assert result.returncode == code and message in one_line(result.stderr)


# --- item 8: hostile fixtures ------------------------------------------------------------------

HOSTILE_FIXTURES = [
    ('[{"_id": 1, "Count": 123456789012345678901234}]', "document 0 (_id 1): it cannot be stored in MongoDB: "
                                                        "MongoDB can only handle up to 8-byte ints"),
    ('[{"_id": 1}, {"_id": 2, "bad\\u0000key": 1}]', "document 1 (_id 2): the key 'bad\\x00key' holds a NUL"),
    ('[{"_id": 1, "when": {"$dat": "2026-01-01"}}]', "document 0 (_id 1): the key '$dat' starts with '$' (a misspelt"),
    ('[{"_id": 1, "a.b": 2}]', "the key 'a.b' holds a dot"),
    ('[' + '[' * 3000 + ']' * 3000 + ']', "is nested too deeply to be read"),
    ('[{"_id": 1, "deep": ' + '{"x": ' * 150 + '1' + '}' * 150 + '}]', "nested deeper than the 100 levels MongoDB"),
    ('[{"_id": 1}, {"_id": 1}]', "document 1 (_id 1) repeats the _id of document 0"),
]


@pytest.mark.parametrize("text, message", HOSTILE_FIXTURES)
def test_a_hostile_fixture_is_refused_naming_file_and_document(tmp_path, text, message):
    path = tmp_path / "System_tasks.json"
    path.write_text(text)
    with pytest.raises(DatabaseUpdateError) as error:
        read_fixture(path)
    assert str(error.value).startswith(f"fixture {path}") and message in str(error.value)


def test_database_update_with_a_hostile_fixture_changes_nothing(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    before = (tmp_path / "db.bson").read_bytes()
    data = tmp_path / "data"
    data.mkdir()
    for source in (PROJECT_ROOT / "data").iterdir():
        (data / source.name).write_text(source.read_text())
    cases = json.loads((data / "DRS.Tmp_Case_Distribution_DRC.json").read_text())
    cases[5]["Arrease"] = 2**70
    (data / "DRS.Tmp_Case_Distribution_DRC.json").write_text(json.dumps(cases))
    result = script("database_update.py", "--data-dir", str(data), env=env)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "DRS.Tmp_Case_Distribution_DRC.json: document 5" in line and "8-byte ints" in line
    assert (tmp_path / "db.bson").read_bytes() == before


# --- item 9: Ctrl-C, SIGTERM, Ctrl-D ------------------------------------------------------------

def test_ctrl_d_at_the_confirmation_prompt_is_a_no():
    class Server:
        is_embedded, db_name, redacted_uri = False, "drs", "mongodb://db.example.org/"

    def ctrl_d(_prompt):
        raise EOFError

    assert confirmed(Server(), assume_yes=False, ask=ctrl_d, interactive=True) is False


@pytest.mark.parametrize("interruption, code", [(KeyboardInterrupt, 130), (None, 143)])
def test_an_interrupted_script_prints_one_line_and_exits_128_plus_the_signal(capsys, interruption, code):
    def script():
        if interruption:
            raise interruption
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_:
            run_script(script, "drs-amend")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exit_.value.code == code
    assert one_line(capsys.readouterr().err).startswith(
        f"drs-amend: stopped by {'SIGINT' if interruption else 'SIGTERM'}; ")


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_run_stopped_while_it_waits_prints_no_traceback_and_saves_nothing(tmp_path, signal_number, script):
    path = tmp_path / "db.bson"
    assert script("database_update.py", env={"DRS_MONGO_URI": f"embedded://{path}"}).returncode == 0
    before = path.read_bytes()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DRS_")}
    environment["DRS_MONGO_URI"] = f"embedded://{path}"
    with filelock.FileLock(f"{path}.lock"):
        job = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "main.py"), "--log-dir", str(tmp_path / "logs")],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not Path(tmp_path / "logs" / "drs_amend.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        job.send_signal(signal_number)
        _, stderr = job.communicate(timeout=30)
    assert job.returncode == 128 + signal_number
    assert one_line(stderr).startswith(f"drs-amend: stopped by {signal.Signals(signal_number).name}; ")
    assert path.read_bytes() == before


@pytest.mark.parametrize("name, message",
                         [("drs.prod", "'.'"), ("drs/x", "'/'"), ("drs$", "'$'"), ("a" * 70, "63 bytes")])
def test_a_database_name_mongodb_refuses_is_a_configuration_error(tmp_path, name, message):
    (tmp_path / "DB_Config.ini").write_text("[DATABASE]\nMONGO_URI = embedded://x.bson\nDB_NAME = drs\n")
    with pytest.raises(ConfigurationError, match=f"environment variable DRS_DB_NAME .*{re.escape(message)}"):
        load_database_settings(tmp_path, environ={"DRS_DB_NAME": name})


def test_a_time_beyond_the_calendar_is_a_usage_error(script):
    result = script("batch_monitor.py", "logs", "--since", "0001-01-01T00:00+14:00")
    assert result.returncode == 2 and "argument --since: expected an ISO date" in one_line(result.stderr)


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    for _ in range(3):
        assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DRS_")} | env
    monitor = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "batch_monitor.py"), "logs", "--export", "json"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    monitor.stdout.read(10)
    monitor.stdout.close()  # as `| head -c 10` does
    stderr = monitor.stderr.read().decode()
    monitor.wait(timeout=60)
    monitor.stderr.close()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


def test_a_usage_error_of_check_prints_an_unknown_status_line_and_no_other_command_does(script):
    check = script("batch_monitor.py", "check", "--bogus")
    assert (check.returncode, check.stdout) == (
        3, "DRS-AMEND UNKNOWN - command-line error of check (see batch_monitor.py check --help)\n")
    named_check = script("batch_monitor.py", "task", "cancel", "x", "--reason", "check")
    assert named_check.returncode == 2 and named_check.stdout == ""  # a reason that says check is no check
    config_dir = script("batch_monitor.py", "--config-dir", "check", "check", "--bogus")
    assert config_dir.returncode == 3


def test_a_reader_that_leaves_midway_through_a_large_output_gets_exit_code_141(tmp_path, script):
    """Python's own write of a text larger than the pipe ends with the part written and no error when the reader
    leaves meanwhile: the script exited 0, its output cut (an operator's trial of issue 17)."""
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", "--generate-history", "600", env=env).returncode == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DRS_")} | env
    monitor = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "batch_monitor.py"), "logs"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first_line = monitor.stdout.readline()
    monitor.stdout.close()  # as `| head -1` does, while the monitor still writes
    stderr = monitor.stderr.read().decode()
    assert monitor.wait(timeout=60) == 141 and first_line.startswith(b"run_id")
    monitor.stderr.close()
    assert stderr == ""
