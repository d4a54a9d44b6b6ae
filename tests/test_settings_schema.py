"""Issue 17, "A mistake is never a successful run": an unknown section or key of an INI file is refused
naming the file, the name and the nearest valid one; an INI file saved with a byte-order mark is read; a
DRS_MONGO_URI or DRS_DB_NAME set but blank is refused instead of silently falling back on the file."""

import re
import shutil

import pytest

from tests.support import PROJECT_ROOT, one_line
from utils.config import (
    ALERTS_CONFIG_FILE,
    CONFIG_FILES,
    DB_CONFIG_FILE,
    INI_SCHEMAS,
    JOB_CONFIG_FILE,
    LOGGING_CONFIG_FILE,
    MONITOR_CONFIG_FILE,
    load_config,
    load_database_settings,
)
from utils.Custom_Exceptions import ConfigurationError
from utils.ini_files import IniFile
from utils.loggers import setup_logging
from utils.read_template_task_id_ini import TEMPLATE_CONFIG_FILE

SHIPPED = PROJECT_ROOT / "config"
SECTION_HEADER = re.compile(r"\[(?P<section>[^]]+)\]")
# A key as the shipped files write it, in use or commented out: `KEY = value` or `; KEY = value`.
KEY_LINE = re.compile(r"(;\s*)?(?P<key>[A-Z][A-Z_]*)\s*=")


@pytest.fixture
def config(tmp_path):
    """A copy of the shipped configuration a test changes."""
    folder = tmp_path / "config"
    shutil.copytree(SHIPPED, folder)
    return folder


def written_keys(path):
    """{section: keys} of a shipped file, the keys commented out included, spelt as written."""
    sections = {}
    section = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if header := SECTION_HEADER.fullmatch(line.strip()):
            section = header["section"]
            sections[section] = []
        elif key_line := KEY_LINE.match(line):
            assert section is not None, (path.name, line)
            sections[section].append(key_line["key"])
    return sections


# --- the schema ------------------------------------------------------------------------------

def test_every_file_the_job_reads_has_a_schema_but_the_logging_one():
    assert set(INI_SCHEMAS) == set(CONFIG_FILES) - {LOGGING_CONFIG_FILE}


@pytest.mark.parametrize("name", sorted(INI_SCHEMAS))
def test_the_shipped_file_holds_exactly_the_schema_in_use_or_commented_out(name):
    schema = {section: sorted(keys) for section, keys in INI_SCHEMAS[name].items()}
    assert {section: sorted(keys) for section, keys in written_keys(SHIPPED / name).items()} == schema


def test_the_loaders_read_every_key_of_the_schema_and_no_other(config, monkeypatch):
    read = set()
    original = IniFile.value

    def recording(ini, section, key, required=True):
        read.add((ini.path.name, section, key))
        return original(ini, section, key, required)

    monkeypatch.setattr(IniFile, "value", recording)
    ca_file = config / "ca.pem"
    ca_file.write_text("")
    (config / ALERTS_CONFIG_FILE).write_text(
        "[SMTP]\nENABLED = yes\nHOST = h\nPORT = 25\nSENDER = a@b\nRECIPIENTS = c@d\nSTARTTLS = no\n"
        f"CA_FILE = {ca_file}\nUSERNAME_ENV = SMTP_USER\nPASSWORD_ENV = SMTP_PASSWORD\n")
    load_config(config, environ={"SMTP_USER": "ops", "SMTP_PASSWORD": "made-up"})
    declared = {(name, section, key) for name, schema in INI_SCHEMAS.items()
                for section, keys in schema.items() for key in keys}
    assert read == declared


# --- unknown sections and keys ---------------------------------------------------------------

UNKNOWN_NAMES = [
    (JOB_CONFIG_FILE, "[BALANCING]\nMIN_SHARE_KEEP = 0.2\n",
     "unknown key MIN_SHARE_KEEP in [BALANCING]; did you mean MIN_SHARE_KEPT?"),
    (JOB_CONFIG_FILE, "[BALANCNG]\nMIN_SHARE_KEPT = 0.2\n", "unknown section [BALANCNG]; did you mean [BALANCING]?"),
    (JOB_CONFIG_FILE, "[balancing]\nMIN_SHARE_KEPT = 0.2\n",
     "unknown section [balancing]; did you mean [BALANCING]?"),
    (JOB_CONFIG_FILE, "[RETRY]\nLEASE_MINUTES = 5\n", "unknown key LEASE_MINUTES in [RETRY]; it belongs in [RECOVERY]"),
    (JOB_CONFIG_FILE, "[LIMITS]\nX = 1\n",
     "unknown section [LIMITS]; valid sections: [BALANCING], [RECOVERY], [RETRY], [RUN], [METRICS], [HISTORY]"),
    (JOB_CONFIG_FILE, "[DEFAULT]\nATTEMPTS = 3\n[RETRY]\nATTEMPTS = 4\n",
     "unknown section [DEFAULT]; valid sections: [BALANCING]"),
    (JOB_CONFIG_FILE, "[RUN]\nDEADLINE = 9\n", "unknown key DEADLINE in [RUN]; valid keys: MAX_MINUTES"),
    (DB_CONFIG_FILE, "[DATABASE]\nMONGO_URI = embedded://x.bson\nDB_NAME = d\nSERVER_SELECTION_TIMEOUT = 9\n",
     "unknown key SERVER_SELECTION_TIMEOUT in [DATABASE]; did you mean SERVER_SELECTION_TIMEOUT_MS?"),
    (DB_CONFIG_FILE, "[DATABASE]\nMONGO_URL = embedded://x.bson\nDB_NAME = d\n",
     "unknown key MONGO_URL in [DATABASE]; did you mean MONGO_URI?"),
    (DB_CONFIG_FILE, "[DATABASE]\nMONGO_URI = embedded://x.bson\nDB_NAME = d\n[DATABASES]\n",
     "unknown section [DATABASES]; did you mean [DATABASE]?"),
    (TEMPLATE_CONFIG_FILE, "[TEMPLATE_TASK]\nTEMPLATE_TASK_ID = 3\nTEMPLATE_ID = 4\n",
     "unknown key TEMPLATE_ID in [TEMPLATE_TASK]; did you mean TEMPLATE_TASK_ID?"),
    (MONITOR_CONFIG_FILE, "[CHECK]\nFAILURE_RATE_WARN = 0.2\n",
     "unknown key FAILURE_RATE_WARN in [CHECK]; did you mean FAILURE_RATE_WARNING?"),
    (MONITOR_CONFIG_FILE, "[CHEK]\n", "unknown section [CHEK]; did you mean [CHECK]?"),
    (ALERTS_CONFIG_FILE, "[SMTP]\nENABLED = no\nPASSWORD = hunter2\n",
     "unknown key PASSWORD in [SMTP]; did you mean PASSWORD_ENV?"),
    (ALERTS_CONFIG_FILE, "[SMTP]\nENABLE = yes\n", "unknown key ENABLE in [SMTP]; did you mean ENABLED?"),
]


@pytest.mark.parametrize("name, text, message", UNKNOWN_NAMES,
                         ids=[f"{name}-{index}" for index, (name, *_) in enumerate(UNKNOWN_NAMES)])
def test_an_unknown_section_or_key_is_refused_naming_file_name_and_nearest(config, name, text, message):
    (config / name).write_text(text)
    with pytest.raises(ConfigurationError) as error:
        load_config(config, environ={})
    assert str(error.value).startswith(f"{config / name}: {message}"), str(error.value)


def test_keys_are_compared_without_case(config):
    (config / JOB_CONFIG_FILE).write_text("[BALANCING]\nmin_share_kept = 0.25\n[RETRY]\nAttempts = 2\n")
    job = load_config(config, environ={}).job
    assert (str(job.min_share_kept), job.retry.attempts) == ("1/4", 2)


def test_a_missing_required_section_is_reported_before_an_unknown_one(config):
    (config / DB_CONFIG_FILE).write_text("[DB]\nMONGO_URI = embedded://x.bson\n")
    with pytest.raises(ConfigurationError, match=r"DB_Config.ini has no \[DATABASE\] section$"):
        load_config(config, environ={})


def test_a_script_refuses_an_unknown_key_in_one_line_with_exit_2(config, tmp_path, script):
    (config / JOB_CONFIG_FILE).write_text("[BALANCING]\nMIN_SHARE_KEEP = 0.5\n")
    result = script("main.py", "--config-dir", str(config), "--log-dir", str(tmp_path / "logs"),
                    env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"})
    assert result.returncode == 2
    assert one_line(result.stderr) == (f"drs-amend: {config / JOB_CONFIG_FILE}: unknown key MIN_SHARE_KEEP in "
                                       f"[BALANCING]; did you mean MIN_SHARE_KEPT?")
    assert not (tmp_path / "db.bson").exists()


# --- a byte-order mark -----------------------------------------------------------------------

def test_files_saved_with_a_byte_order_mark_are_read(config):
    for name in INI_SCHEMAS:
        (config / name).write_bytes(b"\xef\xbb\xbf" + (SHIPPED / name).read_bytes())
    assert load_config(config, environ={}) == load_config(SHIPPED, environ={})


# --- environment variables set but blank -----------------------------------------------------

@pytest.mark.parametrize("variable, value, fallback", [
    ("DRS_MONGO_URI", "", "[DATABASE] MONGO_URI"), ("DRS_MONGO_URI", "  \t", "[DATABASE] MONGO_URI"),
    ("DRS_DB_NAME", "", "[DATABASE] DB_NAME"), ("DRS_DB_NAME", " ", "[DATABASE] DB_NAME"),
])
def test_an_environment_variable_set_but_blank_is_refused(variable, value, fallback):
    with pytest.raises(ConfigurationError) as error:
        load_database_settings(SHIPPED, environ={variable: value})
    assert str(error.value).startswith(f"environment variable {variable} is set but empty: give it a value, or "
                                       f"unset it to use {fallback} of {SHIPPED / DB_CONFIG_FILE}")


def test_an_unset_environment_variable_leaves_the_file_in_force():
    settings = load_database_settings(SHIPPED, environ={"OTHER": ""})
    assert (settings.uri, settings.db_name) == ("embedded://var/drs_embedded_db.bson", "drs_case_distribution_db")


@pytest.mark.parametrize("name, args, code", [("main.py", ["--dry-run", "--log-dir", "{logs}"], 2),
                                              ("database_update.py", [], 2), ("batch_monitor.py", ["check"], 3)])
def test_the_scripts_refuse_an_empty_uri_in_one_line(tmp_path, script, name, args, code):
    result = script(name, *(arg.format(logs=tmp_path / "logs") for arg in args), env={"DRS_MONGO_URI": ""})
    assert result.returncode == code
    line = one_line(result.stdout + result.stderr)
    assert "environment variable DRS_MONGO_URI is set but empty: give it a value, or unset it to use " \
           "[DATABASE] MONGO_URI of" in line and "(the embedded default as shipped)" in line


def test_a_logging_configuration_saved_with_a_byte_order_mark_is_read(config, tmp_path, restore_logging):
    (config / LOGGING_CONFIG_FILE).write_bytes(b"\xef\xbb\xbf" + (SHIPPED / LOGGING_CONFIG_FILE).read_bytes())
    setup_logging(config, tmp_path / "logs")
    assert (tmp_path / "logs").is_dir()
