"""batch_monitor.py task requeue|cancel|release (issue 17): an operator's actions on one amend task, each a
compare-and-set on the task as it was read and recorded on it; a cancelled task is never processed; a
released task is finished by the next run, its former holder fenced out; main.py --task-id naming no amend
task is an error."""

import csv
import getpass
import io
import json
import os
import shutil
import signal
import socket
from datetime import timedelta

import pytest
from bson import ObjectId

from amend_store import COUNTERS_COLLECTION, JOURNAL_COLLECTION, RUN_HISTORY_COLLECTION, TASKS_COLLECTION
from database_checks import fetch_recent_operator_actions
from ops import task_actions
from ops.task_actions import ActionRequest, perform, recent_actions_text
from tests.simulation import Run
from tests.support import (
    FIXED_NOW,
    SETTINGS,
    TASK_005,
    AtFirst,
    Clock,
    FaultInjector,
    SimulatedCrash,
    StallInjector,
    batch_state,
    crash,
    disturbed,
    fresh_db,
    load,
    run_job,
    store_of,
)
from utils.Custom_Exceptions import ConfigurationError, DatabaseUpdateError, TaskValidationError
from utils.reports import timestamp
from utils.shutdown import recording_signals

LATER = FIXED_NOW + SETTINGS.lease + timedelta(minutes=1)  # every claim taken at FIXED_NOW is stale by then
TASK_101 = TASK_005


def act(db, action, task_id=101, now=FIXED_NOW, force=False, reason="asked by the DRC desk"):
    request = ActionRequest(action, task_id, reason, now, force, user="alice", host="ops-1")
    return perform(store_of(db), request, SETTINGS)


def task(db, object_id=TASK_101):
    return db[TASKS_COLLECTION].find_one({"_id": object_id})


def set_status(db, status, **fields):
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": dict(
        fields, task_status=status, status_changed_dtm=FIXED_NOW - timedelta(hours=1),
        status_description=f"set {status} by the test")})


def crashed_after_the_case_writes():
    """The fixtures, after a run died once it had written the cases of task 101 (batch 005): the task in
    processing, claimed until FIXED_NOW + lease, its journal in phase writing."""
    db = fresh_db()
    case_write = 6  # claim, token, journal, renewal, journaled plan, then the cases
    with pytest.raises(SimulatedCrash):
        run_job(disturbed(db, FaultInjector({case_write}, True, crash)), task_id=101)
    assert db[JOURNAL_COLLECTION].find_one({"_id": "005"})["phase"] == "writing"
    return db


def amended_batch_005():
    """Batch 005 as a run that nothing disturbs leaves it once task 101 completed."""
    db = fresh_db()
    run_job(db, task_id=101)
    return batch_state(db, "005")


# --- cancel -------------------------------------------------------------------------------------------

def test_cancel_makes_an_open_task_cancelled_and_records_who_why_and_when():
    db = fresh_db()
    before = task(db)
    assert act(db, "cancel") == (f"amend task 101 ({TASK_101}): open -> cancelled; no run processes it "
                                 "(`task requeue` queues it again)")
    after = task(db)
    assert after["task_status"] == "cancelled"
    assert after["status_description"] == "Cancelled by alice@ops-1: asked by the DRC desk"
    assert after["status_changed_dtm"] == after["end_dtm"] == FIXED_NOW
    assert after["operator_actions"] == [{
        "action": "cancel", "reason": "asked by the DRC desk", "user": "alice", "host": "ops-1",
        "action_dtm": FIXED_NOW, "previous_status": "open", "previous_description": before["status_description"]}]


def test_a_cancelled_task_is_never_processed():
    db = fresh_db()
    untouched = batch_state(db, "005")
    act(db, "cancel")
    report = run_job(db)
    assert [(outcome.task_id, outcome.status) for outcome in report.outcomes] == [(102, "completed")]
    run_job(db, clock=Clock(LATER))
    assert task(db)["task_status"] == "cancelled"
    assert batch_state(db, "005") == untouched


def test_cancelling_a_requeued_task_whose_journal_is_unfinished_restores_its_batch():
    """A task set back to open by hand while its journal was left: cancelled, its journal is finished as that
    of a task in error is (restored), never rolled forward."""
    db = crashed_after_the_case_writes()
    untouched = batch_state(fresh_db(), "005")
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"task_status": "open"}})
    act(db, "cancel")
    assert not {"claimed_by", "claim_expires_dtm"} & set(task(db))  # the crashed run's claim is gone with it
    run_job(db, clock=Clock(FIXED_NOW + timedelta(minutes=1)))
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0
    assert task(db)["task_status"] == "cancelled"
    assert batch_state(db, "005") == untouched


@pytest.mark.parametrize("status, allowed", [("processing", "`task release`"), ("completed", "no action"),
                                             ("error", "`task requeue`"), ("cancelled", "`task requeue`")])
def test_cancel_applies_only_to_an_open_task(status, allowed):
    db = fresh_db()
    set_status(db, status)
    before = task(db)
    with pytest.raises(TaskValidationError) as refused:
        act(db, "cancel")
    assert str(refused.value) == (f"amend task 101 ({TASK_101}) is {status}: `task cancel` applies only to a task "
                                  f"in status open; a task in status {status} allows {allowed}")
    assert task(db) == before


# --- requeue ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["error", "cancelled"])
def test_requeue_puts_a_task_in_error_or_cancelled_back_to_open_and_the_next_run_processes_it(status):
    db = fresh_db()
    set_status(db, status, end_dtm=FIXED_NOW, claimed_by={"run_id": "r1"}, claim_expires_dtm=FIXED_NOW)
    assert act(db, "requeue", reason="the DRC data was fixed") == \
        f"amend task 101 ({TASK_101}): {status} -> open; the next run processes it"
    after = task(db)
    assert (after["task_status"], after["status_changed_dtm"]) == ("open", FIXED_NOW)
    assert after["status_description"] == "Re-queued by alice@ops-1: the DRC data was fixed"
    assert not {"end_dtm", "claimed_by", "claim_expires_dtm"} & set(after)
    (record,) = after["operator_actions"]
    assert (record["action"], record["previous_status"], record["previous_description"]) == \
        ("requeue", status, f"set {status} by the test")
    report = run_job(db, clock=Clock(LATER))
    assert [(outcome.task_id, outcome.status) for outcome in report.outcomes] == [(101, "completed"),
                                                                                   (102, "completed")]
    assert batch_state(db, "005") == amended_batch_005()


@pytest.mark.parametrize("status, allowed", [("open", "`task cancel`"), ("processing", "`task release`"),
                                             ("completed", "no action")])
def test_requeue_applies_only_to_a_task_in_error_or_cancelled(status, allowed):
    db = fresh_db()
    set_status(db, status)
    before = task(db)
    with pytest.raises(TaskValidationError) as refused:
        act(db, "requeue")
    assert f"is {status}: `task requeue` applies only to a task in status error or cancelled; a task in status " \
           f"{status} allows {allowed}" in str(refused.value)
    assert task(db) == before


def test_requeue_is_refused_while_the_tasks_journal_is_unfinished_then_allowed_once_a_run_finished_it():
    db = crashed_after_the_case_writes()
    set_status(db, "error")  # an operator ended it by hand
    with pytest.raises(TaskValidationError) as refused:
        act(db, "requeue")
    assert str(refused.value) == (
        f"amend task 101 ({TASK_101}) cannot be re-queued yet: batch 005 holds the unfinished journal (phase "
        f"writing) of amend task 101 ({TASK_101}); the next run of the job finishes it first (unless a run is "
        f"finishing it now): re-queue the task then")
    assert task(db)["task_status"] == "error" and "operator_actions" not in task(db)
    run_job(db, clock=Clock(FIXED_NOW + timedelta(minutes=1)))  # restores the batch: its task is in error
    act(db, "requeue")
    run_job(db, clock=Clock(FIXED_NOW + timedelta(minutes=2)))
    assert task(db)["task_status"] == "completed"
    assert batch_state(db, "005") == amended_batch_005()


def test_requeue_is_refused_while_another_tasks_journal_holds_its_batch():
    db = fresh_db()
    set_status(db, "error")
    other = ObjectId("6740a0000000000000000777")
    db[JOURNAL_COLLECTION].insert_one({"_id": "005", "task_object_id": other, "Task_Id": 777, "fence": 1,
                                       "phase": "planning"})
    with pytest.raises(TaskValidationError, match=f"planning\\) of amend task 777 \\({other}\\)"):
        act(db, "requeue")


# --- release ------------------------------------------------------------------------------------------

def test_release_of_a_stale_claim_takes_the_journal_over_and_the_next_run_completes_the_task():
    db = crashed_after_the_case_writes()
    holder = task(db)["claimed_by"]
    message = act(db, "release", now=LATER, reason="its run was killed")
    assert message == (f"amend task 101 ({TASK_101}): processing -> open (its claim was stale: its lease expired at "
                       f"{timestamp(FIXED_NOW + SETTINGS.lease)}); the next run finishes its journal of "
                       f"batch 005 (phase writing) first")
    released = task(db)
    assert released["task_status"] == "open" and not {"claimed_by", "claim_expires_dtm"} & set(released)
    assert released["status_description"] == "Released by alice@ops-1: its run was killed"
    (record,) = released["operator_actions"]
    assert (record["action"], record["previous_status"], record["previous_claim"], record["forced"],
            record["action_dtm"]) == ("release", "processing", holder, False, LATER)
    assert db[JOURNAL_COLLECTION].find_one({"_id": "005"})["fence"] == 2  # the crashed run's was 1
    report = run_job(db, clock=Clock(LATER))
    assert report.outcomes[0].task_id == 101 and report.outcomes[0].status == "completed"
    assert "left its writes unfinished when the task was re-queued" in report.outcomes[0].message
    assert batch_state(db, "005") == amended_batch_005()
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0


def test_release_of_a_claim_set_by_hand_without_a_journal():
    db = fresh_db()
    set_status(db, "processing")  # no lease: it held for one lease after status_changed_dtm, an hour ago
    assert act(db, "release").endswith("(its claim was stale: it has no lease and has been processing since "
                                       f"{timestamp(FIXED_NOW - timedelta(hours=1))}); the next run "
                                       "processes it")
    assert task(db)["task_status"] == "open"


def test_release_of_a_live_claim_is_refused_without_force():
    db = crashed_after_the_case_writes()
    before, journal = task(db), db[JOURNAL_COLLECTION].find_one()
    with pytest.raises(TaskValidationError) as refused:
        act(db, "release", now=FIXED_NOW + timedelta(minutes=1))
    assert f"amend task 101 ({TASK_101}) is processing, claimed by run {before['claimed_by']['run_id']}" in \
        str(refused.value)
    assert str(refused.value).endswith(
        "wait until the lease ends (the next run then recovers the task), or release it with --force (that run can "
        "then no longer end the task; the next run finishes its journal)")
    assert task(db) == before and db[JOURNAL_COLLECTION].find_one() == journal


@pytest.mark.parametrize("next_run_first", [True, False], ids=["a-run-finishes-it-first", "the-holder-wakes-first"])
def test_release_with_force_fences_the_holder_out_and_the_task_ends_consistent(next_run_first):
    """Run A journals task 101's plan and stalls before its case write, its lease live. The operator releases
    the task with --force: its journal takes a newer token. Either a run finishes the task before A wakes up
    (A's writes then meet documents of a newer token and are refused: A touches nothing more), or A wakes up
    first (its writes are the journaled plan, and it cannot end the task nor close the journal): either way
    the next run leaves the task completed and the batch as one undisturbed run leaves it."""
    db = fresh_db()
    outcomes = {}

    def operator_then_maybe_a_run():
        assert act(db, "release", force=True, now=FIXED_NOW + timedelta(minutes=1)).endswith(
            "(its claim was live, released with --force); the next run finishes its journal of batch 005 (phase "
            "writing) first")
        assert db[JOURNAL_COLLECTION].find_one({"_id": "005"})["fence"] == 2  # A's is 1
        assert task(db)["operator_actions"][0]["forced"] is True
        if next_run_first:
            outcomes["B"] = run_job(db, clock=Clock(FIXED_NOW + timedelta(minutes=2))).outcomes

    case_write = 6
    report_a = run_job(disturbed(db, StallInjector(case_write, operator_then_maybe_a_run)), task_id=101)
    assert [o.status for o in report_a.outcomes] == ["error"]
    if next_run_first:
        assert "taken over by a run with a newer fencing token" in report_a.outcomes[0].message
        assert [(o.task_id, o.status) for o in outcomes["B"]] == [(101, "completed"), (102, "completed")]
    else:
        assert "is no longer held by" in report_a.outcomes[0].message
        assert task(db)["task_status"] == "open"
        run_job(db, clock=Clock(FIXED_NOW + timedelta(minutes=2)))
    assert task(db)["task_status"] == "completed"
    assert batch_state(db, "005") == amended_batch_005()
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0


@pytest.mark.parametrize("status, allowed", [("open", "`task cancel`"), ("error", "`task requeue`")])
def test_release_applies_only_to_a_task_in_processing(status, allowed):
    db = fresh_db()
    set_status(db, status)
    with pytest.raises(TaskValidationError, match=f"applies only to a task in status processing; a task in status "
                                                  f"{status} allows {allowed}"):
        act(db, "release", force=True)


def test_a_release_that_loses_the_task_after_taking_it_over_says_so():
    db = crashed_after_the_case_writes()

    def another_run_takes_it(call):
        db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"claimed_by.run_id": "another"}})
        return call()
    with pytest.raises(DatabaseUpdateError, match="was taken over by another run while it was being released"):
        act(disturbed(db, AtFirst(TASKS_COLLECTION, "update_one", another_run_takes_it)), "release", now=LATER)
    assert task(db)["task_status"] == "processing" and "operator_actions" not in task(db)


def test_a_signal_during_an_action_is_recorded_and_the_action_finished():
    """Once the action writes, a SIGTERM or Ctrl-C does not leave it half done (the claim taken over, the task
    not released): it is recorded, and the script ends once the action is done (run_script)."""
    db = crashed_after_the_case_writes()

    def signal_then_write(call):
        os.kill(os.getpid(), signal.SIGTERM)
        return call()
    with recording_signals() as signals:
        act(disturbed(db, AtFirst(TASKS_COLLECTION, "find_one_and_update", signal_then_write)), "release", now=LATER)
    assert signals.count == 1
    assert task(db)["task_status"] == "open"


# --- every action: a compare-and-set on what it read ---------------------------------------------------

def claimed_by_a_run(db):
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {
        "task_status": "processing", "claimed_by": {"run_id": "r2"}, "claim_expires_dtm": FIXED_NOW}})


def ended_again_in_error(db):
    """error -> open -> processing -> error by other hands: the same status, a newer status_changed_dtm."""
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"status_changed_dtm": FIXED_NOW}})


def renewed(db):
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"claim_expires_dtm": LATER + SETTINGS.lease}})


def deleted(db):
    db[TASKS_COLLECTION].delete_one({"_id": TASK_101})


CHANGES = {  # action: (the status it finds, what changes before it writes, the status it then is)
    "cancel-claimed": ("cancel", "open", claimed_by_a_run, "is now processing"),
    "requeue-ended-again": ("requeue", "error", ended_again_in_error, "is now error"),
    "requeue-deleted": ("requeue", "cancelled", deleted, "is gone"),
    "release-renewed": ("release", "processing", renewed, "is now processing"),
}


@pytest.mark.parametrize("name", CHANGES)
def test_a_task_that_changes_between_the_read_and_the_write_is_left_as_it_is(name, monkeypatch):
    action, status, change, now = CHANGES[name]
    db = crashed_after_the_case_writes() if status == "processing" else fresh_db()
    if status != "processing":
        set_status(db, status)
    read = task_actions.fetch_amend_task
    changed = {}

    def read_then_change(store, task_id):
        found = read(store, task_id)
        change(db)
        changed["task"] = task(db)
        return found
    monkeypatch.setattr(task_actions, "fetch_amend_task", read_then_change)
    journal, tokens = db[JOURNAL_COLLECTION].find_one(), db[COUNTERS_COLLECTION].find_one()
    with pytest.raises(DatabaseUpdateError) as refused:
        act(db, action, now=LATER)
    assert str(refused.value).startswith(f"amend task 101 ({TASK_101}) changed while it was being ")
    assert str(refused.value).endswith(f"(it was {status}, it {now}): nothing was changed; look at it again")
    assert task(db) == changed["task"]
    assert db[JOURNAL_COLLECTION].find_one() == journal and db[COUNTERS_COLLECTION].find_one() == tokens


# --- the task named, the request --------------------------------------------------------------------------

def test_the_task_must_exist_be_an_amend_task_and_be_the_only_one_with_its_task_id():
    db = fresh_db()
    with pytest.raises(TaskValidationError, match="^no task has Task_Id 999$"):
        act(db, "cancel", task_id=999)
    other = dict(db[TASKS_COLLECTION].find_one({"Task_Id": 101, "task_type": {"$ne": "Case Amend Planning among DRC"}}),
                 _id=ObjectId(), Task_Id=555)
    db[TASKS_COLLECTION].insert_one(other)
    with pytest.raises(TaskValidationError) as refused:
        act(db, "cancel", task_id=555)
    assert str(refused.value) == ("task 555 is of task_type 'Create Case distribution DRC Transaction List for "
                                  "Download', not an amend task ('Case Amend Planning among DRC'): only amend tasks "
                                  "are re-queued, cancelled or released here")
    twin = dict(task(db), _id=ObjectId("6740a0000000000000000199"))
    db[TASKS_COLLECTION].insert_one(twin)
    with pytest.raises(TaskValidationError, match=f"^2 amend tasks have Task_Id 101 \\({TASK_101}, {twin['_id']}\\)"):
        act(db, "cancel")
    assert db[TASKS_COLLECTION].count_documents({"operator_actions": {"$exists": True}}) == 0


def test_force_applies_to_release_only():
    db = fresh_db()
    with pytest.raises(ConfigurationError, match="--force applies to `task release` only, not to `task cancel`"):
        act(db, "cancel", force=True)
    assert task(db)["task_status"] == "open"


def test_the_operator_is_the_os_user_and_host_or_unknown(monkeypatch):
    request = ActionRequest("cancel", 101, "why", FIXED_NOW)
    assert (request.user, request.host) == (getpass.getuser(), socket.gethostname())
    for failure in (OSError("no login name"), KeyError("getpwuid(): uid not found")):
        def fails(failure=failure):
            raise failure
        monkeypatch.setattr(getpass, "getuser", fails)
        assert ActionRequest("cancel", 101, "why", FIXED_NOW).user == "unknown"


# --- status: the recent operator actions ------------------------------------------------------------------

def test_recent_actions_are_the_latest_five_newest_first_reasons_cut():
    db = fresh_db()
    assert recent_actions_text(fetch_recent_operator_actions(store_of(db), 5)) == "Recent operator actions: none"
    for minute in range(6):
        act(db, "cancel" if minute % 2 == 0 else "requeue", now=FIXED_NOW + timedelta(minutes=minute),
            reason=f"reason {minute} " + "x" * 80)
    # hand edits: an entry that is not a document, a field that is not an array
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$push": {"operator_actions": "a note added by hand"}})
    db[TASKS_COLLECTION].update_one({"Task_Id": 102}, {"$set": {"operator_actions": "cancelled by phone"}})
    assert len(fetch_recent_operator_actions(store_of(db), 10)) == 6
    lines = recent_actions_text(fetch_recent_operator_actions(store_of(db), 5)).splitlines()
    assert lines[:2] == ["Recent operator actions:",
                         "time                       action   Task_Id  was        by           reason"]
    assert [line.split()[1] for line in lines[2:]] == ["requeue", "cancel", "requeue", "cancel", "requeue"]
    assert lines[2].startswith(f"{timestamp(FIXED_NOW + timedelta(minutes=5))}  requeue  101      cancelled  "
                               f"alice@ops-1  reason 5 xxx")
    assert lines[2].endswith("x…") and len(lines[2].split("alice@ops-1  ")[1]) == 60


# --- the scripts --------------------------------------------------------------------------------------------

@pytest.fixture
def embedded(tmp_path, saved_fixtures):
    path = tmp_path / "db.bson"
    shutil.copy(saved_fixtures, path)
    return {"path": path, "env": {"DRS_MONGO_URI": f"embedded://{path}"}, "logs": ["--log-dir", str(tmp_path / "logs")]}


def test_task_cancel_from_the_command_line_then_main_skips_the_task_and_status_shows_it(embedded, script):
    when = FIXED_NOW + timedelta(days=3)
    result = script("batch_monitor.py", "task", "cancel", "101", "--reason", "withdrawn by the DRC",
                    env=embedded["env"], clock=Clock(when))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"amend task 101 ({TASK_101}): open -> cancelled; no run processes it (`task requeue` queues it again)\n",
        "")
    assert task(load(embedded["path"]))["operator_actions"][0]["action_dtm"] == when
    job = script("main.py", *embedded["logs"], env=embedded["env"], clock=Clock(when))
    assert job.returncode == 0 and "1 task(s) completed" in job.stderr
    db = load(embedded["path"])
    assert task(db)["task_status"] == "cancelled"
    status = script("batch_monitor.py", "status", env=embedded["env"], clock=Clock(when))
    assert "Amend tasks by status: cancelled 1, completed 2" in status.stdout
    assert f"{timestamp(when)}  cancel  101      open  " in status.stdout
    assert status.stdout.rstrip().endswith("withdrawn by the DRC")


@pytest.mark.parametrize("args, message", [
    (["task", "cancel", "101"], "the following arguments are required: --reason"),
    (["task", "cancel", "101", "--reason", " \t "], "argument --reason: say why, in words"),
    (["task", "cancel", "101", "--reason", "x" * 501], "argument --reason: at most 500 characters, got 501"),
    (["task", "stop", "101", "--reason", "x"], "argument action: invalid choice: 'stop'"),
    (["task", "cancel", "abc", "--reason", "x"], "argument ID: invalid int value: 'abc'"),
    (["task", "cancel", "101", "--reason", "x", "--force"], "--force applies to `task release` only"),
    (["task", "requeue", "101", "--reason", "x"], "is open: `task requeue` applies only to a task in status error"),
    (["task", "cancel", "999", "--reason", "x"], "no task has Task_Id 999"),
])
def test_a_refused_action_is_one_line_exit_2_and_changes_nothing(embedded, script, args, message):
    before = embedded["path"].read_bytes()
    result = script("batch_monitor.py", *args, env=embedded["env"])
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert embedded["path"].read_bytes() == before


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_main_with_a_task_id_no_amend_task_has_is_an_error(embedded, script, dry_run):
    before = embedded["path"].read_bytes()
    result = script("main.py", "--task-id", "999", *dry_run, *embedded["logs"], env=embedded["env"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert error.endswith("no amend task has Task_Id 999 (task_type 'Case Amend Planning among DRC'); nothing was "
                          "done")
    assert embedded["path"].read_bytes() == before  # not even the run's record
    assert load(embedded["path"])[RUN_HISTORY_COLLECTION].count_documents({}) == 0


def test_a_run_that_read_an_errored_tasks_journal_before_it_was_requeued_and_completed_undoes_nothing():
    """A run reads task 101 in error with its unfinished journal, then stalls before taking that journal over;
    meanwhile another run restores and closes it, the operator re-queues the task and a third run completes it,
    stalling before it closes its new journal. The first run wakes: the journal it would take over is not the
    one it read, so it leaves it (hostile review of issue 17: it used to undo the completed amend)."""
    db = crashed_after_the_case_writes()
    set_status(db, "error")
    clock = Clock(FIXED_NOW + timedelta(minutes=1))
    stale = Run("stale", db, clock)
    stale.step_until(COUNTERS_COLLECTION, "find_one_and_update")  # read the journal and the task, in error
    run_job(db, clock=clock)  # restores and closes that journal
    act(db, "requeue", now=clock())
    completing = Run("completing", db, clock)
    completing.step_until(JOURNAL_COLLECTION, "delete_one")  # task 101 completed, its new journal not closed yet
    assert task(db)["task_status"] == "completed"
    stale.finish()
    completing.finish()
    assert task(db)["task_status"] == "completed"
    assert batch_state(db, "005") == amended_batch_005()
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0


def test_a_release_that_fails_midway_leaves_the_task_for_the_next_run_at_once(monkeypatch):
    """A server gone after the release took the claim over: the task stays in processing, held by no lease, so
    the next job run recovers it at once instead of waiting a lease (hostile review of issue 17)."""
    db = crashed_after_the_case_writes()

    def server_gone(*_args, **_kwargs):
        raise DatabaseUpdateError("releasing task 101 failed: the server is gone")
    monkeypatch.setattr(task_actions, "release_task", server_gone)
    with pytest.raises(DatabaseUpdateError):
        act(db, "release", now=LATER)
    assert task(db)["task_status"] == "processing" and task(db)["claim_expires_dtm"] == LATER
    report = run_job(db, clock=lambda: LATER + timedelta(seconds=1))
    assert [(o.task_id, o.status) for o in report.outcomes][0] == (101, "completed")
    assert batch_state(db, "005") == amended_batch_005()


def test_the_dashboard_lists_the_recent_operator_actions(embedded, script, tmp_path):
    when = FIXED_NOW + timedelta(days=3)
    assert script("batch_monitor.py", "task", "cancel", "101", "--reason", "withdrawn <by> the DRC",
                  env=embedded["env"], clock=Clock(when)).returncode == 0
    page = tmp_path / "report.html"
    assert script("batch_monitor.py", "report", "--html", str(page), env=embedded["env"],
                  clock=Clock(when)).returncode == 0
    html = page.read_text()
    assert "<h2>Recent operator actions</h2>" in html
    assert (f"<td>{timestamp(when)}</td><td>cancel</td><td>101</td><td>open</td>" in html
            and "withdrawn &lt;by&gt; the DRC" in html)


def test_logs_exports_the_operator_actions_filtered_by_time_and_task(embedded, script):
    first, second = FIXED_NOW + timedelta(days=3), FIXED_NOW + timedelta(days=4)
    for when, action in ((first, "cancel"), (second, "requeue")):
        assert script("batch_monitor.py", "task", action, "101", "--reason", f"{action}, asked by the desk",
                      env=embedded["env"], clock=Clock(when)).returncode == 0
    listed = script("batch_monitor.py", "logs", "--actions", "--export", "csv", env=embedded["env"])
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert [(row["time"], row["action"], row["Task_Id"], row["was"], row["reason"]) for row in rows] == [
        (timestamp(second), "requeue", "101", "cancelled", "requeue, asked by the desk"),
        (timestamp(first), "cancel", "101", "open", "cancel, asked by the desk")]
    since = script("batch_monitor.py", "logs", "--actions", "--since", f"{second:%Y-%m-%dT%H:%M}", "--export", "json",
                   env=embedded["env"])
    assert [row["action"] for row in json.loads(since.stdout)] == ["requeue"]
    other = script("batch_monitor.py", "logs", "--actions", "--task-id", "102", env=embedded["env"])
    assert other.returncode == 0 and "requeue" not in other.stdout
    mixed = script("batch_monitor.py", "logs", "--actions", "--status", "error", env=embedded["env"])
    assert mixed.returncode == 2 and "--status, --batch and --group-by apply to the runs" in mixed.stderr


@pytest.mark.parametrize("form", ["csv", "json", "txt"])
def test_an_export_of_the_operator_actions_is_written_over_by_the_next(embedded, script, tmp_path, form):
    assert script("batch_monitor.py", "task", "cancel", "101", "--reason", "withdrawn", env=embedded["env"],
                  clock=Clock(FIXED_NOW)).returncode == 0
    out = tmp_path / f"actions.{form}"
    for _ in range(2):
        result = script("batch_monitor.py", "logs", "--actions", "--export", form, "--out", str(out),
                        env=embedded["env"])
        assert result.returncode == 0, result.stderr
    assert "withdrawn" in out.read_text()
