"""Fixtures of the suite (the helpers they build on are in tests/support.py)."""

import gc
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embedded.mongomock_compat import patch_mongomock  # noqa: E402

patch_mongomock()

import batch_monitor  # noqa: E402
import database_update  # noqa: E402
import main as main_script  # noqa: E402
from amend_store import utc_now  # noqa: E402
from tests.support import SETTINGS, add_template, fresh_db, new_database  # noqa: E402
from utils import secrets  # noqa: E402
from utils.loggers import get_logger  # noqa: E402

SCRIPTS = {"main.py": main_script, "batch_monitor.py": batch_monitor, "database_update.py": database_update}


@pytest.fixture(autouse=True)
def unfrozen_objects():
    """What a test froze (utils/collector.py) is collectable again after it: the suite is one long process."""
    yield
    gc.unfreeze()


@pytest.fixture
def settings():
    return SETTINGS


@pytest.fixture
def db():
    """A fresh in-memory database holding the shipped fixtures of data/."""
    return fresh_db()


@pytest.fixture
def empty_db():
    """An in-memory database holding only the amend template."""
    database = new_database()
    add_template(database)
    return database


class LoggingState:
    """The handlers, levels and propagation of the root and job loggers, to put back."""

    def __init__(self):
        self.saved = [(logger, logger.handlers[:], logger.level, logger.propagate)
                      for logger in (logging.getLogger(), get_logger())]

    def restore(self):
        for logger, handlers, level, propagate in self.saved:
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


@pytest.fixture(autouse=True)
def restore_logging():
    """Logging as it was before the test, after every test (a script's set-up attaches handlers to capture
    streams and files; one left behind would swallow a later test's lines: log_to_console keeps a handler it
    finds)."""
    state = LoggingState()
    yield state
    state.restore()


@dataclass(frozen=True)
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def new_process(capsys, monkeypatch, restore_logging):
    """start(env): what a script then sees is what it would see as a new process: no logging handler of
    another, DRS_* environment variables from `env` only, nothing captured yet; registered secrets are
    forgotten afterwards."""
    monkeypatch.setattr(secrets, "_secrets", set())

    def start(env=None):
        restore_logging.restore()
        for variable in [variable for variable in os.environ if variable.startswith("DRS_")]:
            monkeypatch.delenv(variable)
        for variable, value in (env or {}).items():
            monkeypatch.setenv(variable, value)
        capsys.readouterr()
    return start


@pytest.fixture
def script(capsys, new_process):
    """Run a script's main(argv, clock) in this process, as `python SCRIPT ARGS` would run it: its exit code
    and what it printed. DRS_* environment variables come from `env` only; `clock` is the real one unless
    given (a test that builds dates gives the clock it built them from)."""
    def run(name, *args, env=None, clock=utc_now):
        new_process(env)
        try:
            code = SCRIPTS[name].main(list(args), clock=clock)
        except SystemExit as exit_:
            code = exit_.code
        output = capsys.readouterr()
        return ScriptResult(int(code), output.out, output.err)
    return run


@pytest.fixture(scope="module")
def saved_fixtures(tmp_path_factory):
    """The fixtures of data/ saved as an embedded data file once per module; tests copy it."""
    from embedded.data_file import save_database

    path = tmp_path_factory.mktemp("fixtures") / "db.bson"
    save_database(fresh_db(), path)
    return path
