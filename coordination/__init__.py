"""Who may write what, and when: the coordination of runs that may overlap.

claims.py: a run's hold on a task (claim, renew, release, take over, the stale rule);
journal.py: a task's hold on its batch and the record of its planned writes (open, record, take over,
close, read); fences.py: the fencing tokens that make a late writer's writes match nothing.
See docs/design.md ("Fencing", "Leases", "Crash recovery").
"""
