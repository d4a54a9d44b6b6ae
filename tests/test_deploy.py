"""The systemd units of deploy/systemd/, the alternative to cron: systemd itself verifies them (where
systemd-analyze is installed), and each command they start is one the scripts accept."""

import configparser
import shlex
import shutil
import subprocess

import pytest

import batch_monitor
import main
from tests.support import PROJECT_ROOT

UNITS = PROJECT_ROOT / "deploy" / "systemd"
INSTALL_DIR = "/opt/drs-amend"
ENVIRONMENT_FILE = "/etc/drs-amend/environment"


def unit(name):
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read(UNITS / name, encoding="utf-8")
    return parser


def script_and_arguments(service):
    command = shlex.split(unit(service)["Service"]["ExecStart"])
    assert command[0] == f"{INSTALL_DIR}/.venv/bin/python", command
    return command[1], command[2:]


def test_each_timer_starts_its_service_and_each_service_runs_in_the_install():
    assert sorted(path.name for path in UNITS.iterdir()) == [
        "drs-amend-check.service", "drs-amend-check.timer", "drs-amend.service", "drs-amend.timer"]
    for timer in ("drs-amend.timer", "drs-amend-check.timer"):
        assert unit(timer)["Timer"]["Unit"] == timer.replace(".timer", ".service")
        assert unit(timer)["Install"]["WantedBy"] == "timers.target"
    for service in ("drs-amend.service", "drs-amend-check.service"):
        settings = unit(service)["Service"]
        assert (settings["User"], settings["WorkingDirectory"], settings["EnvironmentFile"]) == (
            "drs", INSTALL_DIR, ENVIRONMENT_FILE)


def test_the_services_run_commands_the_scripts_accept():
    job, job_arguments = script_and_arguments("drs-amend.service")
    assert job == "main.py"
    options = main.build_parser().parse_args(job_arguments)
    assert options.quiet and options.max_minutes == 9
    check, check_arguments = script_and_arguments("drs-amend-check.service")
    assert check == "batch_monitor.py"
    assert batch_monitor.build_parser().parse_args(check_arguments).command == "check"


def test_a_task_ending_in_error_does_not_fail_the_unit_and_a_stop_lets_the_task_in_hand_finish():
    settings = unit("drs-amend.service")["Service"]
    assert settings["SuccessExitStatus"] == str(main.ExitStatus.TASK_ERROR.value)
    assert settings["KillSignal"] == "SIGTERM"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_verifies_the_units(tmp_path):
    # As installed, with the paths of this checkout (systemd checks that ExecStart's program exists) and the
    # current user, since a `drs` user exists only on a production host.
    (tmp_path / "environment").write_text("DRS_MONGO_URI=embedded://var/db.bson\n", encoding="utf-8")
    for path in UNITS.iterdir():
        text = path.read_text(encoding="utf-8").replace(ENVIRONMENT_FILE, str(tmp_path / "environment"))
        text = text.replace(INSTALL_DIR, str(PROJECT_ROOT)).replace("=drs\n", "=root\n")
        (tmp_path / path.name).write_text(text, encoding="utf-8")
    if not (PROJECT_ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout: systemd would find no program to start")
    result = subprocess.run(["systemd-analyze", "verify", *sorted(p.name for p in tmp_path.glob("drs-amend*"))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
