"""A run that stalls past its lease, a task an operator re-queues, leases that cannot expire:
no case is ever moved twice and no batch is left inconsistent (issue 8, items 1, 2 and 5).

The scenario: the fixtures plus a second open amend seq (3) on batch 005 with its own task
103, so that while a run is stalled another run can complete both amends of the batch.
After every scenario, for each batch: every amend task ended; no journal is left; the
summary agrees with the cases; every DRC's and RTOM's total is unchanged; and the cases,
summary and seqs are exactly those of an undisturbed run that processed as many seqs as
the batch has closed (each processed seq moved its cases once), with one completed task per
closed seq.
"""

from collections import Counter
from datetime import timedelta

import pytest
from bson import ObjectId

from amend_store import (
    CASES_COLLECTION,
    COUNTERS_COLLECTION,
    FENCE_FIELD,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from batch_monitor import main as monitor_main
from dry_run import dry_run
from tests.simulation import Run
from tests.support import (
    FIXED_NOW,
    PROJECT_ROOT,
    SETTINGS,
    TASK_005,
    TASK_006,
    AtFirst,
    Clock,
    FaultInjector,
    SimulatedCrash,
    StallInjector,
    copy_of,
    crash,
    current_drc,
    disturbed,
    fresh_db,
    normalized,
    permanent,
    run_job,
    store_of,
)
from utils.Custom_Exceptions import DatabaseUpdateError

TASK_101, TASK_102, TASK_103 = TASK_005, TASK_006, ObjectId("6740a0000000000000000103")
BATCH_TASKS = {"005": (TASK_101, TASK_103), "006": (TASK_102,)}
MUCH_LATER = FIXED_NOW + timedelta(days=400)  # later than every lease any run of these tests writes


def scenario_db():
    db = fresh_db()
    db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": "005"}, {"$push": {"batch_seq_details": {
        "batch_seq": 3, "action_type": "amend", "CRD_Distribution_Status": "open", "CRD_Distribution_Status_on": None,
        "array_of_distributions": [{"rtom": "AD", "donor_drc_id": "D1", "receiver_drc_id": "D2",
                                    "transfer_count": 1}]}}})
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_101})
    db[TASKS_COLLECTION].insert_one(dict(task, _id=TASK_103, Task_Id=103,
                                         created_dtm=task["created_dtm"] + timedelta(hours=2)))
    return db


def run(db, clock, task_id=None):
    return run_job(db, clock=clock, task_id=task_id)


def observed(db, batch):
    """What an amend may change in a batch: each case's current DRC, the summary, the seqs."""
    query = {"Case_Distribution_Batch_ID": batch}
    transaction = db[TRANSACTIONS_COLLECTION].find_one(query)
    return {
        "cases": {case["Case_Id"]: (current_drc(case), case["RTOM"]) for case in db[CASES_COLLECTION].find(query)},
        "summary": {(row["DRC_Id"], row["RTOM"]): (row["Count"], row["Tot_Arrease"])
                    for row in db[SUMMARY_COLLECTION].find(query)},
        "seqs": normalized([{key: seq.get(key) for key in ("batch_seq", "action_type", "CRD_Distribution_Status",
                                                           "CRD_Distribution_Status_on")}
                            for seq in transaction["batch_seq_details"]]),
    }


def closed_amends(state):
    return sum(1 for seq in state["seqs"]
               if seq["action_type"] == "amend" and seq["CRD_Distribution_Status"] == "close")


def undisturbed_states():
    """{batch: [state after 0, 1, ... processed seqs]} of runs that nothing disturbs."""
    db = scenario_db()
    states = {batch: [observed(db, batch)] for batch in BATCH_TASKS}
    for task_id, batch in ((101, "005"), (102, "006"), (103, "005")):
        run(db, Clock(FIXED_NOW), task_id=task_id)
        states[batch].append(observed(db, batch))
    return states


ORACLE = undisturbed_states()


def summary_from_cases(db, batch):
    totals = {}
    for case in db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": batch}):
        count, total = totals.get((current_drc(case), case["RTOM"]), (0, 0))
        totals[(current_drc(case), case["RTOM"])] = (count + 1, total + case["Arrease"])
    return {cell: (count, round(total, 2)) for cell, (count, total) in totals.items()}


def assert_consistent(db):
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0
    for batch, tasks in BATCH_TASKS.items():
        statuses = [db[TASKS_COLLECTION].find_one({"_id": task})["task_status"] for task in tasks]
        assert set(statuses) <= {"completed", "error"}, statuses
        state = observed(db, batch)
        initial = ORACLE[batch][0]
        # the summary agrees with the cases (a cell emptied by the amends holds 0)
        stored = {cell: counts for cell, counts in state["summary"].items() if counts[0]}
        assert stored == summary_from_cases(db, batch), batch
        # SPEC invariants: no case changed RTOM; every DRC's and RTOM's total is unchanged
        assert {case: rtom for case, (_, rtom) in state["cases"].items()} == \
               {case: rtom for case, (_, rtom) in initial["cases"].items()}
        for position in (0, 1):
            assert Counter(cell[position] for cell in state["cases"].values()) == \
                   Counter(cell[position] for cell in initial["cases"].values())
        # each processed seq moved its cases exactly once, and was processed by one completed task
        processed = closed_amends(state) - closed_amends(initial)
        assert state == ORACLE[batch][processed], (batch, processed)
        assert statuses.count("completed") == processed, (batch, statuses)


def requeue(db, keep_claim=True):
    """What an operator does to a task seen in processing: set it back to open."""
    update = {"$set": {"task_status": "open", "status_description": "re-queued by the operator"}}
    if not keep_claim:
        update["$unset"] = {"claimed_by": "", "claim_expires_dtm": ""}
    db[TASKS_COLLECTION].update_many({"task_status": "processing"}, update)


def undisturbed_write_count():
    injector = FaultInjector()
    run(disturbed(scenario_db(), injector), Clock(FIXED_NOW))
    return len(injector.writes)


WRITE_POINTS = range(1, undisturbed_write_count() + 1)


def test_the_scenario_has_three_tasks_of_ten_writes():
    assert len(WRITE_POINTS) == 30
    assert [closed_amends(states[-1]) for states in ORACLE.values()] == [2, 2]  # 005: seqs 2, 3; 006: 2 (fixture), 3


# --- item 1: a run that outlives its lease writes nothing more -------------------------------

def stall_then(variant, db, clock_a):
    """What happens while run A is stalled."""
    def during_stall():
        if variant == "lease-expired":
            clock_a.now = FIXED_NOW + SETTINGS.lease + timedelta(minutes=1)  # for everyone, A included
            run(db, clock_a)
        elif variant == "clock-ahead":
            run(db, Clock(FIXED_NOW))  # A's clock is a year ahead: its lease looks endless
        else:
            requeue(db, keep_claim=variant == "re-queued")
            run(db, Clock(FIXED_NOW))
    return during_stall


@pytest.mark.slow
@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("variant", ["lease-expired", "clock-ahead", "re-queued", "re-queued-unclaimed"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_a_stalled_run_is_fenced_out_at_every_write_point(k, variant, after_write):
    db = scenario_db()
    clock_a = Clock(FIXED_NOW + timedelta(days=365) if variant == "clock-ahead" else FIXED_NOW)
    try:
        run(disturbed(db, StallInjector(k, stall_then(variant, db, clock_a), after_write)), clock_a)
    except DatabaseUpdateError:
        pass  # a claim of A failed for good: the run stops (exit code 2)
    run(db, Clock(MUCH_LATER))
    assert_consistent(db)


class FailTheSummaryWrite(StallInjector):
    """Write 7 (the summary of task 101) fails for good, so the run undoes; it stalls at write `at`."""

    def on_write(self, number, collection, command, call):
        if number == 7:
            raise permanent("injected: the summary write failed")
        return super().on_write(number, collection, command, call)


def test_the_issue_scenario_a_stall_before_the_case_writes():
    """A journals its plan of seq 2, stalls past its lease; B completes the task, C the later amend
    (seq 3); A wakes up and must not rewrite the summary (or anything) from its stale plan."""
    db = scenario_db()
    clock_a = Clock(FIXED_NOW)
    later = FIXED_NOW + SETTINGS.lease + timedelta(minutes=1)
    reports = {}

    def b_and_c():
        clock_a.now = later
        reports["B"] = run(db, Clock(later), task_id=101)
        reports["C"] = run(db, Clock(later + timedelta(minutes=1)), task_id=103)

    case_write = 6  # claim, token, journal, renewal, journaled plan, then the cases
    report_a = run(disturbed(db, StallInjector(case_write, b_and_c)), clock_a, task_id=101)
    assert [o.status for o in reports["B"].outcomes] == ["completed"]
    assert "its writes were finished" in reports["B"].outcomes[0].message
    assert [o.status for o in reports["C"].outcomes] == ["completed"]
    assert [o.status for o in report_a.outcomes] == ["error"]
    assert "taken over by a run with a newer fencing token" in report_a.outcomes[0].message
    assert observed(db, "005") == ORACLE["005"][2]
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_101})["task_status"] == "completed"
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0


def test_a_stalled_undo_is_fenced_out_too():
    """A's write fails and A decides to undo, but stalls first; B finishes the undo; C then completes the
    amend; A's late undo must not revert C's work."""
    db = scenario_db()
    clock_a = Clock(FIXED_NOW)
    later = FIXED_NOW + SETTINGS.lease + timedelta(minutes=1)

    def b_then_c():
        clock_a.now = later
        run(db, Clock(later), task_id=101)  # B: finishes the undo, the task ends in error
        db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"task_status": "open"}})  # queued again
        run(db, Clock(later), task_id=101)  # C: completes seq 2

    # writes: 1-6 as usual (6 = cases), 7 = summary fails, 8 = journal undoing; stall before the undo's first write
    report_a = run(disturbed(db, FailTheSummaryWrite(9, b_then_c)), clock_a, task_id=101)
    assert [o.status for o in report_a.outcomes] == ["error"]
    assert observed(db, "005") == ORACLE["005"][1]
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_101})["task_status"] == "completed"


LATER = FIXED_NOW + SETTINGS.lease + timedelta(minutes=1)
FIRST_TASK_WRITES = range(1, 11)


@pytest.mark.slow
@pytest.mark.parametrize("k", FIRST_TASK_WRITES)
def test_a_recovering_run_that_stalls_is_fenced_out_too(k):
    """A dies after its k-th write; B, recovering it, stalls at each of its own writes in turn while C
    takes B's claim over; then B wakes up."""
    crashed = scenario_db()
    with pytest.raises(SimulatedCrash):
        run(disturbed(crashed, FaultInjector({k}, True, crash)), Clock(FIXED_NOW))
    recovery = FaultInjector()
    run(disturbed(copy_of(crashed), recovery), Clock(LATER))
    for j in range(1, len(recovery.writes) + 1):
        db = copy_of(crashed)
        clock_b = Clock(LATER)

        def c_takes_over(db=db, clock_b=clock_b):
            clock_b.now = LATER + SETTINGS.lease + timedelta(minutes=1)
            run(db, clock_b)

        try:
            run(disturbed(db, StallInjector(j, c_takes_over)), clock_b)
        except DatabaseUpdateError:
            pass  # a claim of B failed for good
        run(db, Clock(MUCH_LATER))
        assert_consistent(db)


@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("at", range(8, 14))  # journal undoing, undo of seq, summary, cases, status, journal
def test_a_run_stalled_at_any_point_of_its_undo_is_fenced_out(at, after_write):
    db = scenario_db()
    clock_a = Clock(FIXED_NOW)

    def others_run():
        clock_a.now = LATER
        run(db, clock_a)

    run(disturbed(db, FailTheSummaryWrite(at, others_run, after_write)), clock_a)
    run(db, Clock(MUCH_LATER))
    assert_consistent(db)


def test_every_written_document_carries_the_writers_fence():
    db = scenario_db()
    run(db, Clock(FIXED_NOW), task_id=101)
    moved = db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": "005", "Amend_Status": "Completed"})
    assert {case[FENCE_FIELD] for case in moved} == {1}
    assert {row[FENCE_FIELD] for row in db[SUMMARY_COLLECTION].find({"Case_Distribution_Batch_ID": "005"})} == {1}
    assert db[TRANSACTIONS_COLLECTION].find_one({"Case_Distribution_Batch_ID": "005"})[FENCE_FIELD] == 1
    run(db, Clock(FIXED_NOW), task_id=103)
    assert db[TRANSACTIONS_COLLECTION].find_one({"Case_Distribution_Batch_ID": "005"})[FENCE_FIELD] == 2
    untouched = db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": "006"})
    assert all(FENCE_FIELD not in case for case in untouched)


# --- item 2: a journal left by an earlier attempt is finished first, whatever the task says --------

@pytest.mark.slow
@pytest.mark.parametrize("keep_claim", [True, False], ids=["claim-kept", "claim-removed"])
@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_a_crashed_task_requeued_by_an_operator_at_every_write_point(k, after_write, keep_claim):
    db = scenario_db()
    with pytest.raises(SimulatedCrash):
        run(disturbed(db, FaultInjector({k}, after_write, crash)), Clock(FIXED_NOW))
    requeue(db, keep_claim)
    run(db, Clock(FIXED_NOW + timedelta(minutes=1)))  # before any lease expired
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0
    assert db[TASKS_COLLECTION].count_documents({"task_status": {"$in": ["open", "processing"]},
                                                 "task_type": "Case Amend Planning among DRC"}) == 0
    run(db, Clock(MUCH_LATER))
    assert_consistent(db)


def crash_after_the_case_writes(db):
    case_write = 6
    with pytest.raises(SimulatedCrash):
        run(disturbed(db, FaultInjector({case_write}, True, crash)), Clock(FIXED_NOW), task_id=101)
    assert db[JOURNAL_COLLECTION].find_one({"_id": "005"})["phase"] == "writing"


def test_the_issue_scenario_a_requeued_task_is_rolled_forward_not_planned_again():
    db = scenario_db()
    crash_after_the_case_writes(db)
    requeue(db)
    report = run(db, Clock(FIXED_NOW + timedelta(minutes=1)), task_id=101)
    assert [o.status for o in report.outcomes] == ["completed"]
    message = report.outcomes[0].message
    assert message.startswith("Amended batch 005 seq 2")
    assert "an earlier attempt left its writes unfinished when the task was re-queued" in message
    assert observed(db, "005") == ORACLE["005"][1]
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0


def test_a_run_that_stalled_after_claiming_a_requeued_task_never_undoes_what_its_recoverer_completed():
    """Found by the simulation (seed 7020): A claims a re-queued task whose journal is unfinished, and stalls;
    past A's lease, B takes the task and its journal over and rolls it forward; A wakes up, takes the journal
    back with a newer token, fails to close the seq and undoes, while B completes the task: a completed task
    whose cases were moved back. A run that takes a journal over must prove it still holds the task."""
    db = scenario_db()
    crash_after_the_case_writes(db)
    requeue(db)
    clock_a, clock_b = Clock(FIXED_NOW + timedelta(minutes=1)), Clock(LATER + timedelta(minutes=1))
    a = Run("A", db, clock_a, SETTINGS)
    a.step_until(TASKS_COLLECTION, "find_one_and_update")  # its claim of the re-queued task
    a.step()
    a.step_until(COUNTERS_COLLECTION, "find_one_and_update")  # stalls before taking a fencing token
    b = Run("B", db, clock_b, SETTINGS)
    b.step_until(TRANSACTIONS_COLLECTION, "update_one")  # B holds task and journal, about to close the seq
    clock_a.now = clock_b.now
    a.step_until(JOURNAL_COLLECTION, "find_one_and_update")
    a.step()  # A takes the journal over, with a newer token than B's
    b.step()  # B closes the seq
    b.step_until(TASKS_COLLECTION, "update_one")
    b.step()  # and completes the task
    while not a.finished:
        a.step("permanent" if a.pending == (TRANSACTIONS_COLLECTION, "update_one") else None)
    b.finish()
    assert not (a.failure or b.failure)
    run(db, Clock(MUCH_LATER))
    assert_consistent(db)
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_101})["task_status"] == "completed"


def test_a_requeued_task_whose_attempt_wrote_nothing_is_processed_afresh():
    db = scenario_db()
    journal_write = 3
    with pytest.raises(SimulatedCrash):
        run(disturbed(db, FaultInjector({journal_write}, True, crash)), Clock(FIXED_NOW), task_id=101)
    requeue(db)
    report = run(db, Clock(FIXED_NOW + timedelta(minutes=1)), task_id=101)
    assert [o.status for o in report.outcomes] == ["completed"]
    assert "re-queued" not in report.outcomes[0].message
    assert observed(db, "005") == ORACLE["005"][1]


@pytest.mark.parametrize("status, processed", [("completed", 1), ("error", 0), ("cancelled", 0)])
def test_the_journal_of_a_task_ended_by_hand_is_finished_to_agree_with_it(status, processed):
    db = scenario_db()
    crash_after_the_case_writes(db)
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"task_status": status}})
    run(db, Clock(FIXED_NOW + timedelta(minutes=1)), task_id=101)
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0
    assert observed(db, "005") == ORACLE["005"][processed]
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_101})["task_status"] == status


def test_the_journal_of_a_deleted_task_is_restored():
    db = scenario_db()
    crash_after_the_case_writes(db)
    db[TASKS_COLLECTION].delete_one({"_id": TASK_101})
    run(db, Clock(FIXED_NOW + timedelta(minutes=1)))
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0
    # seq 2 stayed open, so task 103 amended it: one processed seq, its cases moved once
    assert observed(db, "005") == ORACLE["005"][1]


def test_a_second_task_on_a_batch_with_a_foreign_leftover_journal_waits_then_runs():
    db = scenario_db()
    crash_after_the_case_writes(db)
    requeue(db)
    # a run limited to task 103 leaves task 101's journal alone: 103 waits for the batch
    report = run(db, Clock(FIXED_NOW + timedelta(minutes=1)), task_id=103)
    assert [o.status for o in report.outcomes] == ["deferred"]
    run(db, Clock(FIXED_NOW + timedelta(minutes=2)))
    assert_consistent(db)
    assert observed(db, "005") == ORACLE["005"][2]


# --- item 5: leases that never expire --------------------------------------------------------

STRANGE_LEASES = {
    "years ahead": lambda db: FIXED_NOW + timedelta(days=3 * 365),
    "a string": lambda db: "tomorrow",
    "a number": lambda db: 1_900_000_000,
    "NaN": lambda db: float("nan"),
    "a document": lambda db: {"$date": "2030-01-01"},
}


def leave_a_claim(db, lease_value):
    crash_after_the_case_writes(db)
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"claim_expires_dtm": lease_value}})


@pytest.mark.parametrize("name", STRANGE_LEASES)
def test_a_lease_that_could_never_expire_is_recovered_by_the_next_run(name):
    db = scenario_db()
    leave_a_claim(db, STRANGE_LEASES[name](db))
    report = run(db, Clock(FIXED_NOW + timedelta(minutes=1)))
    assert [o.status for o in report.outcomes] == ["completed"] * 3
    assert "its writes were finished" in report.outcomes[0].message
    assert_consistent(db)


def test_a_status_changed_in_the_future_without_lease_is_recovered():
    db = scenario_db()
    crash_after_the_case_writes(db)
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$unset": {"claim_expires_dtm": ""},
                                                        "$set": {"status_changed_dtm": MUCH_LATER}})
    run(db, Clock(FIXED_NOW + timedelta(minutes=1)))
    assert_consistent(db)


def test_a_live_lease_slightly_ahead_is_respected():
    """A host whose clock is a minute ahead still holds its task: within MAX_CLOCK_SKEW_SECONDS."""
    db = scenario_db()
    leave_a_claim(db, FIXED_NOW + SETTINGS.lease + timedelta(minutes=1))
    report = run(db, Clock(FIXED_NOW))
    assert [o.status for o in report.outcomes] == ["completed", "deferred"]  # 102, then 103 waits for 005
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_101})["task_status"] == "processing"


@pytest.mark.parametrize("name", STRANGE_LEASES)
def test_check_and_status_count_such_a_claim_as_stuck(name, tmp_path, capsys):
    from embedded.data_file import save_database

    db = scenario_db()
    leave_a_claim(db, STRANGE_LEASES[name](db))
    path = tmp_path / "db.bson"
    save_database(db, path)
    config = tmp_path / "config"
    config.mkdir()
    for source in (PROJECT_ROOT / "config").iterdir():
        (config / source.name).write_text(source.read_text())
    (config / "DB_Config.ini").write_text(
        f"[DATABASE]\nMONGO_URI = embedded://{path}\nDB_NAME = drs_case_distribution_db\n")
    now = FIXED_NOW + timedelta(minutes=1)
    assert monitor_main(["--config-dir", str(config), "check"], clock=lambda: now) != 0
    assert "; 1 stuck task(s); " in capsys.readouterr().out
    assert monitor_main(["--config-dir", str(config), "status"], clock=lambda: now) == 0
    assert "Stuck in processing (lease expired): 1" in capsys.readouterr().out


def test_a_dry_run_says_a_leftover_journal_is_finished_first():
    db = scenario_db()
    crash_after_the_case_writes(db)
    requeue(db)
    results = {result.task_id: result for result in dry_run(store_of(db), SETTINGS)}
    assert results[101].refusal.startswith(
        "BatchBusyError: batch 005 holds the journal (phase writing) of amend task 101")
    assert results[102].refusal is None


def test_a_journal_without_its_task_reference_is_restored_and_the_run_goes_on():
    db = scenario_db()
    crash_after_the_case_writes(db)
    db[JOURNAL_COLLECTION].update_one({"_id": "005"}, {"$unset": {"task_object_id": ""}})
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"task_status": "error"}})
    run(db, Clock(FIXED_NOW + timedelta(minutes=1)))
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0
    assert observed(db, "005") == ORACLE["005"][1]  # restored, then task 103 amended seq 2


def test_an_unreadable_journal_of_an_ended_task_is_reported_and_the_run_goes_on(caplog):
    db = scenario_db()
    crash_after_the_case_writes(db)
    db[JOURNAL_COLLECTION].update_one({"_id": "005"}, {"$set": {"writes": "garbage"}})
    db[TASKS_COLLECTION].update_one({"_id": TASK_101}, {"$set": {"task_status": "error"}})
    report = run(db, Clock(FIXED_NOW + timedelta(minutes=1)))
    assert "the journal of batch 005 could not be finished; the batch stays reserved" in caplog.text
    assert [(o.task_id, o.status) for o in report.outcomes] == [(102, "completed"), (103, "deferred")]


def test_a_requeued_task_whose_attempt_was_undoing_is_restored_then_processed_afresh():
    def die():
        raise SimulatedCrash("the run dies")

    db = scenario_db()
    first_undo_write = 9  # the summary write (7) failed, the undo was journaled (8)
    with pytest.raises(SimulatedCrash):
        run(disturbed(db, FailTheSummaryWrite(first_undo_write, die)), Clock(FIXED_NOW), task_id=101)
    assert db[JOURNAL_COLLECTION].find_one({"_id": "005"})["phase"] == "undoing"
    requeue(db)
    report = run(db, Clock(FIXED_NOW + timedelta(minutes=1)), task_id=101)
    assert [o.status for o in report.outcomes] == ["completed"]
    assert observed(db, "005") == ORACLE["005"][1]
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0


def test_a_leftover_journal_appearing_during_a_run_defers_its_task_to_the_next_run():
    """Between the recovery pass and the claim, another process leaves a journal of task 101 (its own crashed
    attempt): this run does not adopt it; it defers the task, and the next run finishes the journal first."""
    db = scenario_db()
    crashed = scenario_db()
    crash_after_the_case_writes(crashed)
    leftover = crashed[JOURNAL_COLLECTION].find_one({"_id": "005"})
    cases_written = list(crashed[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": "005"}))
    tokens_issued = crashed[COUNTERS_COLLECTION].find_one()

    def another_process_left_its_attempt():
        db[COUNTERS_COLLECTION].insert_one(tokens_issued)  # one database, one counter: its token was issued here
        db[JOURNAL_COLLECTION].insert_one(leftover)
        for case in cases_written:
            db[CASES_COLLECTION].replace_one({"_id": case["_id"]}, case)

    first_claim = 1
    report = run(disturbed(db, StallInjector(first_claim, another_process_left_its_attempt)), Clock(FIXED_NOW),
                 task_id=101)
    assert [o.status for o in report.outcomes] == ["deferred"]
    assert "holds the unfinished journal (phase writing) of an earlier attempt of this task" in \
        report.outcomes[0].message
    run(db, Clock(FIXED_NOW + timedelta(minutes=1)))
    assert_consistent(db)


# --- a row a newer undo removed is never brought back (issue 15, item 1) ----------------------------

def fails_for_good(call):
    raise permanent("injected: this write failed for good")


CASE_WRITE = (CASES_COLLECTION, "bulk_write")
SUMMARY_WRITE = (SUMMARY_COLLECTION, "bulk_write")
SEQ_CLOSE = (TRANSACTIONS_COLLECTION, "update_one")


@pytest.mark.parametrize("undoer_fails_at", [CASE_WRITE, SUMMARY_WRITE, SEQ_CLOSE], ids=["cases", "summary", "seq"])
@pytest.mark.parametrize("stall_at", [CASE_WRITE, SUMMARY_WRITE], ids=["cases", "summary"])
@pytest.mark.parametrize("stalled_runs", [1, 2], ids=["A-stalls", "A-and-recovering-B-stall"])
def test_a_summary_row_a_newer_undo_removed_is_never_brought_back(stall_at, undoer_fails_at, stalled_runs):
    """Batch 005 lacks its D1/AD row, so task 101's plan inserts one. Run A stalls before a write; after the
    lease a run takes the task over, fails for good at a later write and undoes, removing the row (or that
    run, B, stalls before the same write too, and a third run, C, takes over from B and undoes). When the
    stalled runs wake up, their upserts must not insert the row again: the batch stays exactly as it was
    (the task ended in error), the row absent, a tombstone in its place."""
    db = fresh_db()
    db[SUMMARY_COLLECTION].delete_one({"Case_Distribution_Batch_ID": "005", "DRC_Id": "D1", "RTOM": "AD"})
    before = observed(db, "005")

    def stalled_run(number):
        """Run `number` (0 is A) stalls before `stall_at`, while the next one runs a lease later."""
        clock = Clock(FIXED_NOW + number * (SETTINGS.lease + timedelta(minutes=1)))
        if number == stalled_runs:
            run(disturbed(db, AtFirst(*undoer_fails_at, fails_for_good)), clock, task_id=101)
            return

        def stall(call):
            stalled_run(number + 1)
            return call()
        run(disturbed(db, AtFirst(*stall_at, stall)), clock, task_id=101)

    stalled_run(0)
    run(db, Clock(MUCH_LATER))
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_101})
    assert task["task_status"] == "error"
    assert observed(db, "005") == before
    tombstones = list(db[SUMMARY_COLLECTION].find({"DRS_Amend_Removed": {"$exists": True}}))
    assert [stone["DRS_Amend_Removed"] for stone in tombstones] == [
        {"Case_Distribution_Batch_ID": "005", "DRC_Id": "D1", "RTOM": "AD"}]
    assert set(tombstones[0]) == {"_id", "DRS_Amend_Removed", FENCE_FIELD}


def test_a_journal_no_run_can_take_over_is_reported_loudly(caplog):
    """A journal carrying a token above the counter (a counter lowered or restored from a backup) blocks its
    batch for ever: every run would only say "deferred". Each run says what is wrong and what to do."""
    db = scenario_db()
    db[JOURNAL_COLLECTION].insert_one({"_id": "005", "task_object_id": ObjectId("6740a0000000000000000100"),
                                       "Task_Id": 100, "fence": 99, "phase": "writing", "run": {}})
    run(db, Clock(FIXED_NOW))
    critical = [record.getMessage() for record in caplog.records if record.levelname == "CRITICAL"]
    assert any("the journal of batch 005 carries fencing token 99, higher than any this database issues now"
               in message and f"{COUNTERS_COLLECTION} was lowered or reset; set its value above 99" in message
               for message in critical), critical
