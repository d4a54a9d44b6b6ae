"""The simulation of tests/simulation.py with fixed seeds: a few thousand steps of runs interleaved one
command at a time, with stalls, faults, crashes and operator actions, every invariant checked after
every step (tools/simulate.py runs it for as long as it is given)."""

import pytest

from tests.simulation import InvariantViolation, Simulation, check_batch, read_world, simulate

SEEDS = range(4)
STEPS = 700


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_no_interleaving_of_runs_faults_and_operators_breaks_a_promise(seed):
    simulation = simulate(seed, STEPS)
    assert simulation.started_runs > 10  # the world did move


@pytest.mark.slow
def test_the_world_does_every_move():
    """Over the CI seeds, every kind of move happens: signals, stalls, faults, crashes, operator edits."""
    log = "\n".join(line for seed in SEEDS for line in simulate(seed, STEPS).log)
    for move in ("SIGTERM to run", "stopped by its second SIGTERM", "stalls before", "transient", "permanent",
                 "crashed", "operator re-queues", "operator renumbers", "operator asks for amend seq", "arrives with"):
        assert move in log, move


def test_the_checks_see_a_broken_batch():
    """The invariants are not vacuous: a summary row off by one, a case moved by hand, a seq closed
    without its task are each a violation."""
    simulation = Simulation(seed=1)
    db, batch_id = simulation.db, simulation.batch_ids[0]
    initial = simulation.initial_rows[batch_id]
    assert check_batch(batch_id, read_world(db)[batch_id], initial) == []
    row = db["DRS_Database.Case_Distribution_DRC_Summary"].find_one({"Case_Distribution_Batch_ID": batch_id})
    db["DRS_Database.Case_Distribution_DRC_Summary"].update_one({"_id": row["_id"]}, {"$inc": {"Count": 1}})
    assert any("its summary changed" in problem for problem in check_batch(batch_id, read_world(db)[batch_id], initial))
    with pytest.raises(InvariantViolation):
        simulation.check()
