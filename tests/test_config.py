"""Configuration files, environment overrides, URI redaction and logging set-up."""

import logging
from fractions import Fraction
from pathlib import Path

import pytest

from amend_store import BatchRead
from balance_resources import DEFAULT_MIN_SHARE_KEPT
from tests.support import PROJECT_ROOT, FakeStream, run_job, uri_with_password
from utils.config import CONFIG_FILES, DEFAULT_LEASE, load_config, load_database_settings, load_job_settings
from utils.Custom_Exceptions import ConfigurationError
from utils.loggers import get_logger, setup_logging
from utils.read_template_task_id_ini import read_template_task_id
from utils.retry import RetryPolicy
from utils.secrets import redact_uri


def write(folder, name, text):
    path = Path(folder) / name
    path.write_text(text, encoding="utf-8")
    return path


DB_INI = "[DATABASE]\nMONGO_URI = embedded://var/x.bson\nDB_NAME = drs\n"


def test_shipped_configuration_is_the_embedded_default():
    settings = load_database_settings(PROJECT_ROOT / "config", environ={})
    assert settings.is_embedded and settings.db_name == "drs_case_distribution_db"
    assert settings.embedded_path == PROJECT_ROOT / "var" / "drs_embedded_db.bson"
    assert read_template_task_id(PROJECT_ROOT / "config") == 3
    assert load_job_settings(3, PROJECT_ROOT / "config") == load_job_settings(3, PROJECT_ROOT / "nowhere")


def test_environment_overrides_uri_and_name(tmp_path):
    write(tmp_path, "DB_Config.ini", DB_INI)
    settings = load_database_settings(tmp_path, environ={"DRS_MONGO_URI": uri_with_password("u", "secret", "db:27017/"),
                                                         "DRS_DB_NAME": "prod"})
    assert (settings.uri, settings.db_name) == (uri_with_password("u", "secret", "db:27017/"), "prod")
    assert "secret" not in repr(settings) and "secret" not in settings.redacted_uri


def test_absolute_embedded_path_is_kept(tmp_path):
    write(tmp_path, "DB_Config.ini", DB_INI)
    target = tmp_path / "db.bson"
    settings = load_database_settings(tmp_path, environ={"DRS_MONGO_URI": f"embedded://{target}"})
    assert settings.embedded_path == target


@pytest.mark.parametrize("uri, redacted", [
    (uri_with_password("admin", "p%40ss", "host:27017/db"), uri_with_password("admin", "***", "host:27017/db")),
    (uri_with_password("admin", "pw", "cluster.example.net/", "mongodb+srv"),
     uri_with_password("admin", "***", "cluster.example.net/", "mongodb+srv")),
    ("mongodb://host:27017/", "mongodb://host:27017/"),
    ("embedded://var/x.bson", "embedded://var/x.bson"),
])
def test_redact_uri(uri, redacted):
    assert redact_uri(uri) == redacted


@pytest.mark.parametrize("text, message", [
    (None, "DB_Config.ini is missing"),
    ("not an ini file", "cannot be read: File contains no section headers"),
    ("[OTHER]\nX = 1\n", "has no [DATABASE] section"),
    ("[DATABASE]\nDB_NAME = drs\n", "[DATABASE] MONGO_URI is missing or empty"),
    ("[DATABASE]\nMONGO_URI = embedded://x\n", "[DATABASE] DB_NAME is missing or empty"),
    ("[DATABASE]\nMONGO_URI = postgres://x\nDB_NAME = d\n", "is not supported"),
    ("[DATABASE]\nMONGO_URI = embedded://\nDB_NAME = d\n", "names no file"),
    (DB_INI + "SERVER_SELECTION_TIMEOUT_MS = soon\n", "SERVER_SELECTION_TIMEOUT_MS must be an integer, got 'soon'"),
    (DB_INI + "LOCK_TIMEOUT_SECONDS = -1\n", "LOCK_TIMEOUT_SECONDS must be at least 0"),
])
def test_database_configuration_errors(tmp_path, text, message):
    if text is not None:
        write(tmp_path, "DB_Config.ini", text)
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_database_settings(tmp_path, environ={})


def test_a_password_never_reaches_a_configuration_error(tmp_path):
    write(tmp_path, "DB_Config.ini", DB_INI)
    with pytest.raises(ConfigurationError) as raised:
        load_database_settings(tmp_path, environ={"DRS_MONGO_URI": "redis://u:hunter2@host/"})
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("text, message", [
    (None, "Set_Template_TaskID.ini is missing"),
    ("[TEMPLATE_TASK]\n", "TEMPLATE_TASK_ID is missing or empty"),
    ("[TEMPLATE_TASK]\nTEMPLATE_TASK_ID = three\n", "TEMPLATE_TASK_ID must be an integer, got 'three'"),
    ("[TEMPLATE_TASK]\nTEMPLATE_TASK_ID = 0\n", "TEMPLATE_TASK_ID must be at least 1"),
    ("[OTHER]\n", "has no [TEMPLATE_TASK] section"),
])
def test_template_configuration_errors(tmp_path, text, message):
    if text is not None:
        write(tmp_path, "Set_Template_TaskID.ini", text)
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_template_task_id(tmp_path)


def test_job_settings_defaults_and_values(tmp_path):
    defaults = load_job_settings(3, tmp_path)
    assert (defaults.min_share_kept, defaults.lease, defaults.retry) == (DEFAULT_MIN_SHARE_KEPT, DEFAULT_LEASE,
                                                                         RetryPolicy())
    write(tmp_path, "Job_Settings.ini", "[BALANCING]\nMIN_SHARE_KEPT = 0.25\n[RECOVERY]\nLEASE_MINUTES = 5\n"
                                        "[RETRY]\nATTEMPTS = 2\nINITIAL_DELAY_SECONDS = 0.1\nMAX_DELAY_SECONDS = 1\n")
    settings = load_job_settings(3, tmp_path)
    assert settings.min_share_kept == Fraction(1, 4)
    assert settings.lease.total_seconds() == 300
    assert settings.retry == RetryPolicy(attempts=2, initial_delay_seconds=0.1, max_delay_seconds=1.0)


@pytest.mark.parametrize("text, message", [
    ("[BALANCING]\nMIN_SHARE_KEPT = 1.5\n", "MIN_SHARE_KEPT must be at least 0 and below 1"),
    ("[BALANCING]\nMIN_SHARE_KEPT = half\n", "MIN_SHARE_KEPT must be a number such as 0.2, got 'half'"),
    ("[BALANCING]\nMIN_SHARE_KEPT = -0.1\n", "MIN_SHARE_KEPT must be at least 0"),
    ("[RECOVERY]\nLEASE_MINUTES = 0\n", "LEASE_MINUTES must be at least 1"),
    ("[RECOVERY]\nLEASE_MINUTES = 2.5\n", "LEASE_MINUTES must be an integer"),
    ("[RETRY]\nATTEMPTS = 0\n", "ATTEMPTS must be at least 1"),
    ("[RETRY]\nINITIAL_DELAY_SECONDS = soon\n", "INITIAL_DELAY_SECONDS must be a number of seconds"),
    ("[RETRY]\nMAX_DELAY_SECONDS = 99999\n", "MAX_DELAY_SECONDS must be between 0 and 3600"),
    ("no section", "Job_Settings.ini cannot be read"),
])
def test_job_settings_errors(tmp_path, text, message):
    write(tmp_path, "Job_Settings.ini", text)
    with pytest.raises(ConfigurationError, match=message):
        load_job_settings(3, tmp_path)


def test_logging_writes_rotating_files_under_a_created_folder(tmp_path, restore_logging):
    log_dir = tmp_path / "new" / "logs"
    setup_logging(PROJECT_ROOT / "config", log_dir)
    get_logger("tasks").error("something to fix")
    for handler in get_logger().handlers:
        handler.flush()
    assert "something to fix" in (log_dir / "drs_amend.log").read_text()
    assert "something to fix" in (log_dir / "drs_amend_errors.log").read_text()
    assert any(isinstance(h, logging.handlers.RotatingFileHandler) for h in get_logger().handlers)


@pytest.mark.parametrize("text, message", [
    (None, "loggers.ini is missing"),
    ("[loggers]\nkeys=root\n", "is not usable"),
    ("garbage", "is not usable"),
    ("[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n[logger_root]\nhandlers=h\n"
     "[handler_h]\nclass=NoSuchHandler\nargs=()\n", "is not usable"),
])
def test_logging_configuration_errors(tmp_path, restore_logging, text, message):
    if text is not None:
        write(tmp_path, "loggers.ini", text)
    with pytest.raises(ConfigurationError, match=message):
        setup_logging(tmp_path, tmp_path / "logs")


def test_the_progress_bar_shows_only_on_a_terminal():
    from utils.loggers import progress_bar

    for terminal in (False, True):
        stream = FakeStream(terminal)
        assert list(progress_bar(range(3), "batch 005", "case", stream=stream)) == [0, 1, 2]
        assert ("batch 005" in stream.text) is terminal


@pytest.mark.parametrize("batch_read, read", [(BatchRead.FULL, "read 31 case(s)"),
                                               (BatchRead.PUSH_DOWN, "read 4 of the 31 case(s)")])
def test_a_run_logs_one_line_per_phase(db, settings, caplog, batch_read, read):
    with caplog.at_level(logging.INFO, logger="drs_amend"):
        run_job(db, settings=settings, batch_read=batch_read)
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"{read} in 6 cell(s) of batch 005 in" in m for m in messages), messages
    assert any("planned 1 distribution(s): 4 case(s) to reassign, 6 summary cell(s) in" in m for m in messages)
    assert any("wrote 4 case(s) and 6 summary row(s), closed seq 2 in" in m for m in messages)
    assert len(messages) < 20


def test_one_loader_reads_every_file_into_one_immutable_object(tmp_path):
    import dataclasses

    settings = load_config(PROJECT_ROOT / "config", environ={})
    assert settings.database.db_name == "drs_case_distribution_db" and settings.job.template_task_id == 3
    assert settings.thresholds.window_hours == 24 and settings.alerts is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.job = None
    for name in CONFIG_FILES:
        write(tmp_path, name, (PROJECT_ROOT / "config" / name).read_text())
    write(tmp_path, "monitor.ini", "[CHECK]\nWINDOW_HOURS = a day\n")
    with pytest.raises(ConfigurationError, match=r"monitor.ini: \[CHECK\] WINDOW_HOURS must be an integer"):
        load_config(tmp_path, environ={})


def test_the_scripts_read_the_configuration_through_the_one_loader():
    for script in ("main.py", "batch_monitor.py", "database_update.py"):
        text = (PROJECT_ROOT / script).read_text()
        assert "load_config(" in text, script
        for loader in ("load_database_settings", "load_job_settings", "load_thresholds", "load_alert_settings",
                       "read_template_task_id", "read_ini"):
            assert loader not in text, (script, loader)
