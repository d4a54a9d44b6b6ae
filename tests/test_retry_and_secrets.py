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

from amend_store import JOURNAL_COLLECTION, TASKS_COLLECTION, TRANSACTIONS_COLLECTION, AmendStore
from tests.support import (
    PROJECT_ROOT,
    SETTINGS,
    TASK_005,
    FaultInjector,
    disturbed,
    run_job,
    uri_with_password,
)
from utils import secrets
from utils.Custom_Exceptions import DatabaseUpdateError
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


# --- exactly one layer retries ---------------------------------------------------------------

def always_down(_what=None):
    raise AutoReconnect("down")


@pytest.mark.parametrize("operation", ["read", "write"])
def test_a_store_operation_is_attempted_as_often_as_the_policy_says(operation):
    pauses, calls = [], []

    def failing():
        calls.append(1)
        always_down()

    store = AmendStore(None, RetryPolicy(attempts=5, initial_delay_seconds=0.5), sleep=pauses.append)
    with pytest.raises(AutoReconnect if operation == "read" else DatabaseUpdateError):
        getattr(store, operation)("an operation", failing)
    assert len(calls) == 5 and pauses == [0.5, 1, 2, 4]


def test_a_store_operation_inside_another_is_refused():
    store = AmendStore(None)
    with pytest.raises(RuntimeError, match="a store operation ran inside another one, so retries would nest"):
        store.read("outer", lambda: store.read("inner", lambda: None))
    assert store.read("after", lambda: "works again") == "works again"


class FailingReads:
    """Every `find` on one collection fails with a transient error; counts the attempts."""

    def __init__(self, collection):
        self.collection = collection
        self.attempts = 0

    def __call__(self, collection, command, call, args):
        if (collection, command) == (self.collection, "find"):
            self.attempts += 1
            always_down()
        return call()


@pytest.mark.parametrize("collection, where", [(JOURNAL_COLLECTION, "the journals read by recovery"),
                                               (TRANSACTIONS_COLLECTION, "the read phase of a task")])
def test_one_failing_read_of_a_run_is_attempted_exactly_attempts_times(db, collection, where):
    failing, pauses = FailingReads(collection), []
    try:
        report = run_job(disturbed(db, failing), sleep=pauses.append)
    except AutoReconnect:
        report = None  # the journals could not be read: the run stops (exit code 2)
    assert failing.attempts == SETTINGS.retry.attempts * (1 if report is None else 2), where
    assert pauses == list(SETTINGS.retry.delays()) * (1 if report is None else 2)
    if report is not None:
        assert [o.status for o in report.outcomes] == ["error", "error"]
        assert "database error: AutoReconnect: down" in report.outcomes[0].message


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
            uri = uri_with_password("operator", DECODED_PASSWORD, "db")
            return OperationFailure(f"{message}: auth to {uri} failed",
                                    code=18)

        run_job(disturbed(db, FaultInjector({5}, error=leaky)), settings=settings)
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
