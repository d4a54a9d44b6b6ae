"""The generator of large batches: deterministic, valid for the job, reachable from database_update.py."""

import re

import pytest

from amend_store import CASES_COLLECTION, SUMMARY_COLLECTION, TASKS_COLLECTION, TRANSACTIONS_COLLECTION
from fixture_generator import BatchShape, generate_batch
from tests.support import load, new_database, run_job, store_of
from update_databases import reset_collections


def materialized(shape):
    return {name: list(documents) for name, documents in generate_batch(shape).items()}


def test_same_arguments_same_documents_and_another_seed_differs():
    shape = BatchShape(2_000, drcs=4, rtoms=3, seed=7)
    assert materialized(shape) == materialized(shape)
    other_seed = BatchShape(2_000, drcs=4, rtoms=3, seed=8)
    assert materialized(shape)[CASES_COLLECTION] != materialized(other_seed)[CASES_COLLECTION]


def test_the_shape_is_respected_and_the_summary_matches_the_cases():
    documents = materialized(BatchShape(3_000, drcs=5, rtoms=4, distributions=4))
    cases = documents[CASES_COLLECTION]
    assert sorted(c["Case_Id"] for c in cases) == list(range(1, 3_001))
    assert len({c["DRC_Id"] for c in cases}) == 5 and len({c["RTOM"] for c in cases}) == 4
    counts = {}
    for case in cases:
        counts[(case["DRC_Id"], case["RTOM"])] = counts.get((case["DRC_Id"], case["RTOM"]), 0) + 1
    assert {(r["DRC_Id"], r["RTOM"]): r["Count"] for r in documents[SUMMARY_COLLECTION]} == counts
    distributions = documents[TRANSACTIONS_COLLECTION][0]["batch_seq_details"][1]["array_of_distributions"]
    assert len(distributions) == 4
    assert len({(d["rtom"], d["donor_drc_id"], d["receiver_drc_id"]) for d in distributions}) == 4


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_generated_batch_is_amended_by_the_job(seed):
    db = new_database()
    reset_collections(store_of(db), generate_batch(BatchShape(2_000, drcs=4, rtoms=3, seed=seed)))
    report = run_job(db)
    assert [o.status for o in report.outcomes] == ["completed"]
    assert report.cases_moved > 0


@pytest.mark.parametrize("fields, message", [({"cases": 5}, "cases must be at least 6"),
                                             ({"cases": 10, "drcs": 1}, "drcs must be at least 2"),
                                             ({"cases": 10, "rtoms": 1}, "rtoms must be at least 2"),
                                             ({"cases": 10, "transfer_share": 0.9}, "transfer_share")])
def test_impossible_shapes_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        BatchShape(**fields)


def test_database_update_generate(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    result = script("database_update.py", "--generate", "1500", "--drcs", "3", "--rtoms", "2", "--seed", "4", env=env)
    assert result.returncode == 0, result.stderr
    assert "DRS.Tmp_Case_Distribution_DRC 1500" in result.stdout
    # one line per phase with its duration: generated, imported, saved (a new file: nothing to load)
    assert re.search(r"INFO generated batch GEN: 1500 case\(s\), an amend request of \d distribution\(s\), in [\d.]+ s",
                     result.stderr)
    assert re.search(r"INFO replaced the documents of 5 collection\(s\) by 1\d{3} and created the indexes in [\d.]+ s",
                     result.stderr)
    assert re.search(r"INFO saved \d+ record\(s\), [\d.]+ MB, to .*db.bson in [\d.]+ s", result.stderr)
    db = load(tmp_path / "db.bson")
    assert db[TASKS_COLLECTION].find_one()["parameters"]["Case_Distribution_Batch_ID"] == "GEN"
    job = script("main.py", "--log-dir", str(tmp_path / "logs"), env=env)
    assert job.returncode == 0 and "1 task(s) completed" in job.stderr


@pytest.mark.parametrize("args, message", [(["--generate", "0"], "expected a positive integer, got 0"),
                                           (["--generate", "many"], "expected a positive integer, got 'many'"),
                                           (["--generate", "10", "--drcs", "1"], "drcs must be at least 2")])
def test_database_update_generate_rejects_bad_arguments(tmp_path, args, message, script):
    result = script("database_update.py", *args, env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"})
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "db.bson").exists()


@pytest.mark.parametrize("cases", [6, 7, 10, 13, 25, 99, 250])
@pytest.mark.parametrize("drcs, rtoms", [(10, 8), (2, 2), (3, 5)])
def test_every_size_from_the_smallest_makes_a_batch_the_job_amends(cases, drcs, rtoms):
    db = new_database()
    reset_collections(store_of(db), generate_batch(BatchShape(cases, drcs=drcs, rtoms=rtoms)))
    report = run_job(db)
    assert [o.status for o in report.outcomes] == ["completed"], report.outcomes


def test_shape_options_need_generate(tmp_path, script):
    result = script("database_update.py", "--drcs", "4", env={"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"})
    assert result.returncode == 2
    assert "--drcs shape(s) a generated batch: give --generate N too" in result.stderr
    assert not (tmp_path / "db.bson").exists()


def test_a_generated_history_is_deterministic_and_shaped_as_main_records_runs(tmp_path, script):
    from datetime import datetime

    from amend_store import RUN_HISTORY_COLLECTION
    from fixture_generator import generate_history
    from history.run_report import RunIdentity, RunReport

    end = datetime(2026, 11, 26, 12)
    history = generate_history(300, end)
    assert history == generate_history(300, end) != generate_history(300, end, seed=2)
    recorded_keys = set(RunReport(RunIdentity.new(), end).document())
    assert all(recorded_keys <= set(run) for run in history)
    assert all(run["ended_dtm"] <= end for run in history) and history[0]["started_dtm"] < history[-1]["started_dtm"]
    outcomes = [task["outcome"] for run in history for task in run["tasks"]]
    assert {"completed", "error", "deferred"} == set(outcomes) and outcomes.count("completed") > len(outcomes) / 2
    assert all(run["exit_code"] == (1 if run["errored"] else 0) for run in history)

    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    result = script("database_update.py", "--generate-history", "40", env=env)
    assert result.returncode == 0 and f"{RUN_HISTORY_COLLECTION} 40" in result.stdout
    assert load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].count_documents({}) == 40
    assert script("database_update.py", "--generate-history", "0", env=env).returncode == 2
