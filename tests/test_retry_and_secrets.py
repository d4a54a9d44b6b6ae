"""The retry policy, and that a password in the URI never reaches a log, an error or a task."""

import logging

import pytest
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from task_processor import amend_task_processing
from tests.conftest import PROJECT_ROOT, fixed_clock, uri_with_password
from tests.faults import FaultInjector, FaultyDatabase
from tests.mutations import TASK_005
from utils import secrets
from utils.connectDB import TASKS_COLLECTION
from utils.loggers import get_logger, setup_logging
from utils.retry import RetryPolicy, is_transient

PASSWORD = "s3cr%40t-pw"
DECODED_PASSWORD = "s3cr@t-pw"


def retryable_write_error():
    error = OperationFailure("not primary", code=10107)
    error._add_error_label("RetryableWriteError")
    return error


@pytest.mark.parametrize("error, transient", [
    (AutoReconnect("x"), True), (NetworkTimeout("x"), True), (ServerSelectionTimeoutError("x"), True),
    (WriteConcernError("x"), True), (retryable_write_error(), True),
    (OperationFailure("x", code=2), False), (DuplicateKeyError("x"), False), (ValueError("x"), False),
])
def test_which_errors_are_transient(error, transient):
    assert is_transient(error) is transient


def test_backoff_doubles_and_is_capped():
    assert list(RetryPolicy(attempts=6, initial_delay_seconds=0.5, max_delay_seconds=3).delays()) == [0.5, 1, 2, 3, 3]
    assert list(RetryPolicy(attempts=1).delays()) == []


def test_call_retries_transient_errors_then_gives_up():
    pauses, calls = [], []

    def flaky():
        calls.append(1)
        raise AutoReconnect("down")

    with pytest.raises(AutoReconnect):
        RetryPolicy(attempts=3, initial_delay_seconds=0.1).call(flaky, "op", sleep=pauses.append)
    assert len(calls) == 3 and pauses == [0.1, 0.2]


def test_call_does_not_retry_a_permanent_error():
    calls = []

    def broken():
        calls.append(1)
        raise OperationFailure("bad", code=2)

    with pytest.raises(OperationFailure):
        RetryPolicy().call(broken, "op", sleep=lambda _: None)
    assert calls == [1]


def test_call_returns_the_first_success():
    outcomes = iter([AutoReconnect("a"), NetworkTimeout("b"), "done"])

    def sometimes():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert RetryPolicy().call(sometimes, "op", sleep=lambda _: None) == "done"


@pytest.fixture
def registered_password(monkeypatch):
    monkeypatch.setattr(secrets, "_secrets", set())
    secrets.register_uri_secrets(uri_with_password("operator", PASSWORD, "db.example.org:27017/"))


def test_scrub_hides_the_password_as_written_and_decoded(registered_password):
    assert secrets.scrub(f"a {PASSWORD} b {DECODED_PASSWORD}") == "a *** b ***"


def test_a_password_in_a_driver_error_reaches_no_task_and_no_log(db, settings, registered_password, tmp_path):
    logger = get_logger()
    saved = logger.handlers[:]
    setup_logging(PROJECT_ROOT / "config", tmp_path)
    try:
        def leaky(message):
            return OperationFailure(f"{message}: auth to {uri_with_password('operator', DECODED_PASSWORD, 'db')} failed",
                                    code=18)

        amend_task_processing(FaultyDatabase(db, FaultInjector({5}, error=leaky)), settings, clock=fixed_clock)
        get_logger("tasks").exception("while failing", exc_info=OperationFailure(f"pw {PASSWORD}"))
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers[:] = saved
    description = db[TASKS_COLLECTION].find_one({"_id": TASK_005})["status_description"]
    assert f"auth to {uri_with_password('operator', '***', 'db')} failed" in description
    logs = (tmp_path / "drs_amend.log").read_text() + (tmp_path / "drs_amend_errors.log").read_text()
    assert uri_with_password("operator", "***", "db") in logs
    assert PASSWORD not in description + logs and DECODED_PASSWORD not in description + logs


def test_the_secret_filter_leaves_other_records_alone(registered_password):
    record = logging.LogRecord("drs_amend", logging.INFO, __file__, 1, "moved %d cases", (4,), None)
    assert secrets.SecretFilter().filter(record) and record.getMessage() == "moved 4 cases"
