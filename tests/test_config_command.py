"""`batch_monitor.py config`: every setting in effect, secrets as ***, each with where it comes from (a key of an
INI file, an environment variable, or the default); it reads no database (issue 17)."""

import json
import shutil
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT, one_line, uri_with_password
from utils.config import INI_SCHEMAS, SETTING_VALUES, load_config, setting_sources, shown_path

# A server nobody listens on: config never connects to it.
NOWHERE = "localhost:1/"
PASSWORD = "s3cret-pw-42"


@pytest.fixture
def config_dir(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    return config


def settings_of(script, *args, env=None):
    result = script("batch_monitor.py", *args, "config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["setting"]: (row["value"], row["source"]) for row in json.loads(result.stdout)}


def test_every_key_of_every_ini_file_is_shown_once_in_their_order(script):
    shown = list(settings_of(script))
    assert shown == [f"[{section}] {key}" for schema in INI_SCHEMAS.values() for section, keys in schema.items()
                     for key in keys]
    assert set(SETTING_VALUES) == {key for schema in INI_SCHEMAS.values() for keys in schema.values() for key in keys}


def test_the_shipped_configuration_from_its_files_and_defaults(script):
    settings = settings_of(script)
    assert settings["[DATABASE] MONGO_URI"] == ("embedded://var/drs_embedded_db.bson",
                                                "file config/DB_Config.ini [DATABASE] MONGO_URI")
    assert settings["[TEMPLATE_TASK] TEMPLATE_TASK_ID"] == (
        3, "file config/Set_Template_TaskID.ini [TEMPLATE_TASK] TEMPLATE_TASK_ID")
    assert settings["[BALANCING] MIN_SHARE_KEPT"] == (0.2, "file config/Job_Settings.ini [BALANCING] MIN_SHARE_KEPT")
    assert settings["[RECOVERY] LEASE_MINUTES"] == (30, "file config/Job_Settings.ini [RECOVERY] LEASE_MINUTES")
    assert settings["[RUN] MAX_MINUTES"] == (None, "default")  # commented out in the file
    assert settings["[HISTORY] RETENTION_DAYS"] == (None, "default")
    assert settings["[SMTP] ENABLED"] == (False, "file config/alerts.ini [SMTP] ENABLED")
    assert settings["[SMTP] HOST"] == (None, "not used: alerts are off")


def test_the_environment_overrides_and_the_password_is_hidden(script):
    uri = uri_with_password("drs", PASSWORD, NOWHERE)
    result = script("batch_monitor.py", "config", env={"DRS_MONGO_URI": uri, "DRS_DB_NAME": "other_db"})
    assert result.returncode == 0 and result.stderr == ""
    assert PASSWORD not in result.stdout
    lines = {" ".join(line.split()[:2]): line.split(None, 3)[2:] for line in result.stdout.splitlines()[1:]}
    assert lines["[DATABASE] MONGO_URI"] == [uri_with_password("drs", "***", NOWHERE), "environment DRS_MONGO_URI"]
    assert lines["[DATABASE] DB_NAME"] == ["other_db", "environment DRS_DB_NAME"]
    assert result.stdout.splitlines()[0].split() == ["setting", "value", "from"]


def test_a_missing_file_gives_defaults_and_a_key_set_in_another_folder_names_its_file(script, config_dir):
    (config_dir / "Job_Settings.ini").unlink()
    (config_dir / "monitor.ini").write_text("[CHECK]\nWINDOW_HOURS = 48\n")
    settings = settings_of(script, "--config-dir", str(config_dir))
    assert settings["[RECOVERY] LEASE_MINUTES"] == (30, "default")
    assert settings["[RETRY] INITIAL_DELAY_SECONDS"] == (0.5, "default")
    assert settings["[CHECK] WINDOW_HOURS"] == (48, f"file {config_dir / 'monitor.ini'} [CHECK] WINDOW_HOURS")
    assert settings["[CHECK] FAILURE_RATE_WARNING"] == (0.1, "default")


def test_alert_credentials_are_hidden_and_said_to_come_from_their_variables(script, config_dir, tmp_path):
    (config_dir / "alerts.ini").write_text("[SMTP]\nENABLED = yes\nHOST = mail.example\nPORT = 587\n"
                                           "SENDER = drs@example\nRECIPIENTS = a@example, b@example\nSTARTTLS = yes\n"
                                           "USERNAME_ENV = DRS_TEST_SMTP_USER\nPASSWORD_ENV = DRS_TEST_SMTP_PASSWORD\n")
    env = {"DRS_TEST_SMTP_USER": "mailer-account", "DRS_TEST_SMTP_PASSWORD": PASSWORD}
    result = script("batch_monitor.py", "--config-dir", str(config_dir), "config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout and "mailer-account" not in result.stdout
    settings = {row["setting"]: (row["value"], row["source"]) for row in json.loads(result.stdout)}
    where = f"file {config_dir / 'alerts.ini'} [SMTP]"
    assert settings["[SMTP] ENABLED"] == (True, f"{where} ENABLED")
    assert settings["[SMTP] PORT"] == (587, f"{where} PORT")
    assert settings["[SMTP] RECIPIENTS"] == (["a@example", "b@example"], f"{where} RECIPIENTS")
    assert settings["[SMTP] CA_FILE"] == (None, "default")
    assert settings["[SMTP] USERNAME_ENV"] == (
        "***", f"environment DRS_TEST_SMTP_USER (named by {where} USERNAME_ENV)")
    assert settings["[SMTP] PASSWORD_ENV"] == (
        "***", f"environment DRS_TEST_SMTP_PASSWORD (named by {where} PASSWORD_ENV)")
    text = script("batch_monitor.py", "--config-dir", str(config_dir), "config", env=env).stdout
    assert PASSWORD not in text and "mailer-account" not in text
    assert [line.split()[2:4] for line in text.splitlines() if line.startswith("[SMTP] RECIPIENTS")] == [
        ["a@example,", "b@example"]]
    assert [line.split()[2] for line in text.splitlines() if line.startswith("[SMTP] STARTTLS")] == ["yes"]


def test_a_relay_without_authentication_has_no_credentials(script, config_dir):
    (config_dir / "alerts.ini").write_text("[SMTP]\nENABLED = yes\nHOST = relay\nPORT = 25\nSENDER = drs@example\n"
                                           "RECIPIENTS = ops@example\nUSERNAME_ENV =\n")
    settings = settings_of(script, "--config-dir", str(config_dir))
    assert settings["[SMTP] USERNAME_ENV"] == settings["[SMTP] PASSWORD_ENV"] == (None, "default")
    assert settings["[SMTP] STARTTLS"] == (False, "default")


def test_a_configuration_error_is_one_line_exit_2(script, config_dir):
    (config_dir / "monitor.ini").write_text("[CHECK]\nWINDOW_HOURS = soon\n")
    result = script("batch_monitor.py", "--config-dir", str(config_dir), "config")
    assert result.returncode == 2 and result.stdout == ""
    assert "WINDOW_HOURS must be an integer, got 'soon'" in one_line(result.stderr)


def test_values_are_those_load_config_reads():
    settings = load_config(PROJECT_ROOT / "config", {})
    found = {source.setting: source.value for source in setting_sources(settings, PROJECT_ROOT / "config", {})}
    assert found["[DATABASE] LOCK_TIMEOUT_SECONDS"] == settings.database.lock_timeout_seconds
    assert found["[RECOVERY] MAX_CLOCK_SKEW_SECONDS"] == settings.job.clock_skew.total_seconds()
    assert found["[CHECK] OPEN_TASKS_CRITICAL"] == settings.thresholds.open_tasks_critical


def test_a_path_is_shown_relative_to_the_project_when_it_lies_in_it(tmp_path):
    assert shown_path(PROJECT_ROOT / "config" / "monitor.ini") == Path("config/monitor.ini")
    assert shown_path(tmp_path / "monitor.ini") == tmp_path / "monitor.ini"
