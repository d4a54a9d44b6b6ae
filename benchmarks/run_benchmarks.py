"""DRS Amend at scale: planning time and memory, commands per task, documents written, balance_resources and
the embedded default next to their references.

    python benchmarks/run_benchmarks.py [--sizes 10000 100000 1000000] [--embedded-max 100000]
                                        [--compare-with OTHER_CHECKOUT]

Every figure comes from a fresh subprocess, so one measurement's memory never inflates the
next one's. Batches come from fixture_generator (10 DRCs, 8 RTOMs, 3 distributions, seed 1).

A figure set beside a reference is measured in the same regime as its reference: the cyclic
garbage collector paused during every measured phase, job and references alike (the job
pauses it itself while it loads the embedded file, reads and plans a batch; a reference run
with it running would pay for traversals the job never pays for).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


def measure_planning(size: int) -> dict[str, Any]:
    """Validate and index a generated batch, then plan it: seconds, and the peak memory of that work.

    Timing pass: the case documents are built beforehand, as a cursor would have decoded
    them, so the figures are the job's own work. Memory pass: the documents are streamed one
    at a time, as from a cursor, under tracemalloc, which counts every allocation the job makes.
    """
    import gc
    import tracemalloc

    from amend_plan import plan_amend
    from amend_store import CASES_COLLECTION, TRANSACTIONS_COLLECTION
    from database_checks import build_case_maps, select_amend_request
    from fixture_generator import BatchShape, generate_batch
    from utils.collector import collector_paused

    def plan_once(documents: dict[str, Any]) -> tuple[float, float, int]:
        """As task_processor.read_and_plan does it."""
        request = select_amend_request(documents[TRANSACTIONS_COLLECTION][0] | {"_id": "GEN"}, "GEN")
        started = time.perf_counter()
        with collector_paused():
            cases = build_case_maps(documents[CASES_COLLECTION], "GEN")
        read_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with collector_paused():
            plan = plan_amend("GEN", request, cases, set(), Fraction(1, 5))
        return read_seconds, time.perf_counter() - started, len(plan.changes)

    documents = generate_batch(BatchShape(size))
    documents[CASES_COLLECTION] = list(documents[CASES_COLLECTION])
    read_seconds, plan_seconds, changed = plan_once(documents)
    del documents
    gc.collect()

    streamed = generate_batch(BatchShape(size))
    tracemalloc.start()
    plan_once(streamed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"read_seconds": read_seconds, "plan_seconds": plan_seconds, "peak_mb": peak / 2**20, "changed": changed}


def measure_commands(size: int) -> dict[str, Any]:
    """The job on mongomock with the cases in a light stand-in: commands per task, documents written."""
    import mongomock

    from amend_store import CASES_COLLECTION, AmendStore
    from benchmarks.light_cases import LightCasesCollection
    from embedded.mongomock_compat import patch_mongomock
    from fixture_generator import BatchShape, generate_batch
    from task_processor import amend_task_processing
    from tests.instruments import CommandLog, InstrumentedDatabase
    from update_databases import reset_collections
    from utils.config import JobSettings

    patch_mongomock()
    documents = generate_batch(BatchShape(size))
    cases = LightCasesCollection(documents.pop(CASES_COLLECTION))
    db: Any = mongomock.MongoClient()["drs"]
    reset_collections(AmendStore(db), documents | {CASES_COLLECTION: []})
    counting = CommandLog()
    started = time.perf_counter()
    report = amend_task_processing(AmendStore(InstrumentedDatabase(db, counting, {CASES_COLLECTION: cases})),
                                   JobSettings(template_task_id=3))
    seconds = time.perf_counter() - started
    (outcome,) = report.outcomes
    return {"commands": len(counting.commands_of_first_task()), "status": outcome.status, "job_seconds": seconds,
            "documents_written": counting.documents_written_by_first_task()}


def measure_server_path(size: int, batch_read: str) -> dict[str, Any]:
    """One task on the server path with `batch_read` (full or push-down), on mongomock standing in for the server
    through the instrumented database: the commands, documents and BSON bytes its commands returned, and a
    digest of what it left (the task's description, the summary, the cases' DRCs) to compare the two reads."""
    import hashlib

    import mongomock
    from bson import ObjectId

    from amend_store import CASES_COLLECTION, SUMMARY_COLLECTION, TASKS_COLLECTION, AmendStore, BatchRead
    from embedded.mongomock_compat import patch_mongomock, store_documents
    from fixture_generator import BatchShape, generate_batch
    from task_processor import amend_task_processing
    from tests.instruments import CommandLog, InstrumentedDatabase
    from update_databases import reset_collections
    from utils.config import JobSettings

    patch_mongomock()
    documents = generate_batch(BatchShape(size))
    db: Any = mongomock.MongoClient()["drs"]
    # filled directly: a million inserts through mongomock would take longer than the task
    store_documents(db[CASES_COLLECTION], (dict(case, _id=ObjectId()) for case in documents.pop(CASES_COLLECTION)))
    reset_collections(AmendStore(db), documents)
    counting = CommandLog()
    started = time.perf_counter()
    report = amend_task_processing(AmendStore(InstrumentedDatabase(db, counting), batch_read=BatchRead(batch_read)),
                                   JobSettings(template_task_id=3))
    seconds = time.perf_counter() - started
    (outcome,) = report.outcomes
    returned, returned_bytes = counting.documents_returned_to_first_task()
    left = [db[TASKS_COLLECTION].find_one({}, {"_id": 0, "status_description": 1}),
            sorted(db[SUMMARY_COLLECTION].find({}, {"_id": 0}), key=repr),
            sorted((case["Case_Id"], case.get("NEW_DRC_ID")) for case in db[CASES_COLLECTION].find(
                {"NEW_DRC_ID": {"$nin": [None, ""]}}, {"Case_Id": 1, "NEW_DRC_ID": 1}))]
    return {"commands": len(counting.commands_of_first_task()), "status": outcome.status, "seconds": seconds,
            "documents": returned, "bytes": returned_bytes, "moved": outcome.cases_moved,
            "digest": hashlib.sha256(repr(left).encode()).hexdigest()}


def embedded_environment(folder: Path) -> dict[str, str]:
    return dict(os.environ, DRS_MONGO_URI=f"embedded://{folder / 'db.bson'}")


def generate_embedded(checkout: Path, size: int, folder: Path) -> float:
    """`database_update.py --generate N` of `checkout` into a new embedded file in `folder`: seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, str(checkout / "database_update.py"), "--generate", str(size)],
                   env=embedded_environment(folder), check=True, capture_output=True, cwd=checkout)
    return time.perf_counter() - started


def run_main(checkout: Path, folder: Path) -> float:
    """`main.py` of `checkout` on the embedded file in `folder`, as cron runs it: seconds."""
    return run_main_measured(checkout, folder)[0]


def run_main_measured(checkout: Path, folder: Path) -> tuple[float, float]:
    """`main.py` of `checkout` on the embedded file in `folder`, as cron runs it: (seconds, peak resident MB of
    that process alone, from its own resource usage)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(checkout / "main.py"), "--log-dir", str(folder / "logs")],
                               env=embedded_environment(folder), cwd=checkout, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, process.args)
    return seconds, usage.ru_maxrss / 1024  # kilobytes on Linux


REPEATS = 3


def records_of(collection: str, records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The document records of one collection in the records of an embedded data file (its header, then them)."""
    current = None
    for record in records:
        current = record.get("collection", current)
        if current == collection and "d" in record:
            yield record


def measure_embedded(size: int) -> dict[str, float]:
    """The embedded default at `size` cases, each figure next to its reference, in one process:

    - loading and saving the generated data file, against bson.decode_all and bson.encode of its records;
    - the job's phase on the loaded file (amend_task_processing), against the same planning on the
      decoded documents in memory (build_case_maps and plan_amend);
    - database_update.py --generate N and main.py as subprocesses, as an operator runs them.

    The in-process figures are the best of REPEATS, each from the generated file, every one of them (job
    and references alike) with the cyclic garbage collector paused; the scripts run as an operator runs them.
    """
    import gc
    import shutil

    import bson
    import mongomock

    from amend_plan import plan_amend
    from amend_store import CASES_COLLECTION, AmendStore
    from database_checks import build_case_maps, fetch_transaction_details
    from embedded.data_file import TRAILER_SIZE, load_database, save_database
    from embedded.mongomock_compat import matching_documents, patch_mongomock
    from task_processor import amend_task_processing
    from utils.collector import collector_paused
    from utils.config import JobSettings

    patch_mongomock()  # as embedded/data_file.py does when it opens the embedded default
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        reset_seconds = generate_embedded(PROJECT_ROOT, size, folder)
        generated = folder / "generated.bson"
        shutil.copyfile(folder / "db.bson", generated)
        run_seconds = run_main(PROJECT_ROOT, folder)

        body = generated.read_bytes()[:-TRAILER_SIZE]
        best: dict[str, float] = {}
        for _ in range(REPEATS):  # the best of a few: this machine is shared, and the best is the least disturbed
            with collector_paused():
                started = time.perf_counter()
                records = bson.decode_all(body)
                encoded = b"".join(bson.encode(record) for record in records)
                timed = {"bson_seconds": time.perf_counter() - started}
            assert len(encoded) == len(body)
            cases = [record["d"] for record in records_of(CASES_COLLECTION, records)]
            del records, encoded

            database: Any = mongomock.MongoClient()["drs"]
            with collector_paused():
                started = time.perf_counter()
                load_database(database, generated)
                timed["load_seconds"] = time.perf_counter() - started
            with collector_paused():
                started = time.perf_counter()
                save_database(database, folder / "saved.bson")
                timed["save_seconds"] = time.perf_counter() - started
            assert (folder / "saved.bson").read_bytes() == generated.read_bytes()

            store = AmendStore(database, in_place=matching_documents)  # as main.py builds it on the embedded default
            with collector_paused():
                started = time.perf_counter()
                plan_amend("GEN", fetch_transaction_details(store, "GEN"), build_case_maps(cases, "GEN"), set(),
                           Fraction(1, 5))
                timed["planning_seconds"] = time.perf_counter() - started
            with collector_paused():
                started = time.perf_counter()
                report = amend_task_processing(store, JobSettings(template_task_id=3))
                timed["job_seconds"] = time.perf_counter() - started
            (outcome,) = report.outcomes
            assert outcome.status == "completed", outcome
            best = {name: min(seconds, best.get(name, seconds)) for name, seconds in timed.items()}
            del database, store, cases
            gc.collect()  # the next repeat starts without this one's garbage, whatever cycles it left
    return {"reset_seconds": reset_seconds, "run_seconds": run_seconds, **best}


BALANCE_REPEATS = 5


def reference_balance(drcs: Mapping[int, tuple[str, str]], receiver_drc: str, donor_drc: str, rtom: str,
                      transfer_value: int, min_share_kept: Fraction) -> dict[int, tuple[str, str]]:
    """SPEC.md's balance_resources as a competent developer writes it without special tricks, the yardstick
    of the project's: the cases indexed by (drc, rtom) in one Python loop, the same checks, sorted
    Case_Ids, the result a copy of `drcs` with the moved cases overwritten."""
    from utils.Custom_Exceptions import ResourceBalanceError

    if isinstance(transfer_value, bool) or not isinstance(transfer_value, int) or transfer_value < 1:
        raise ResourceBalanceError(f"transfer count must be an integer of at least 1, got {transfer_value!r}")
    index: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for case_id, cell in drcs.items():
        index[cell].append(case_id)
    shared = reference_checks(index, receiver_drc, donor_drc, rtom, transfer_value, min_share_kept)
    return reference_moves(drcs, index, receiver_drc, donor_drc, rtom, transfer_value, shared)


def reference_checks(index: Mapping[tuple[str, str], list[int]], receiver_drc: str, donor_drc: str, rtom: str,
                     transfer_value: int, min_share_kept: Fraction) -> list[str]:
    """reference_balance's checks of the DRCs and their shares: the RTOMs other than `rtom` both DRCs hold."""
    from utils.Custom_Exceptions import ResourceBalanceError

    donor_rtoms = {r for d, r in index if d == donor_drc}
    receiver_rtoms = {r for d, r in index if d == receiver_drc}
    if donor_drc == receiver_drc or rtom not in donor_rtoms or rtom not in receiver_rtoms:
        raise ResourceBalanceError(f"both DRCs must differ and hold {rtom!r} cases")
    held = len(index[(donor_drc, rtom)])
    if held - transfer_value < min_share_kept * held:
        raise ResourceBalanceError(f"donor DRC {donor_drc!r} must keep its minimum share of {rtom!r}")
    shared = [r for r in receiver_rtoms & donor_rtoms if r != rtom]
    pool = sum(len(index[(receiver_drc, r)]) for r in shared)
    if pool == 0 or pool - transfer_value < min_share_kept * pool:
        raise ResourceBalanceError(f"receiver DRC {receiver_drc!r} must keep its minimum share of its give-back pool")
    return shared


def reference_moves(drcs: Mapping[int, tuple[str, str]], index: Mapping[tuple[str, str], list[int]],
                    receiver_drc: str, donor_drc: str, rtom: str, transfer_value: int,
                    shared: list[str]) -> dict[int, tuple[str, str]]:
    """reference_balance's moves once its checks passed: a copy of `drcs` with the moved cases overwritten."""
    result = dict(drcs)
    for case_id in sorted(index[(donor_drc, rtom)])[:transfer_value]:
        result[case_id] = (receiver_drc, rtom)
    order = sorted(shared, key=lambda r: (-len(index[(receiver_drc, r)]), r))
    give_back = {r: sorted(index[(receiver_drc, r)]) for r in order}
    given, depth = 0, 0
    while given < transfer_value:  # round robin: the depth-th lowest case of each RTOM that still has one
        for r in order:
            if given < transfer_value and depth < len(give_back[r]):
                result[give_back[r][depth]] = (donor_drc, r)
                given += 1
        depth += 1
    return result


def measure_balance(size: int) -> dict[str, Any]:
    """balance_resources against reference_balance on the cases of a generated batch (Case_Id -> (DRC, RTOM))
    and the first distribution of its amend request (5% of the donor's cases of one RTOM).

    Same process, same input, the cyclic garbage collector paused for both; the two are interleaved (which
    one goes first alternates) and each figure is the best of BALANCE_REPEATS, this machine being shared.
    Both must give the same mapping.
    """
    import gc

    from amend_store import CASES_COLLECTION
    from balance_resources import balance_resources
    from fixture_generator import BatchShape, amend_distributions, generate_batch
    from utils.collector import collector_paused

    documents = generate_batch(BatchShape(size))
    drcs = {case["Case_Id"]: (case["DRC_Id"], case["RTOM"]) for case in documents[CASES_COLLECTION]}
    first = amend_distributions(documents)[0]
    transfer = (first["receiver_drc_id"], first["donor_drc_id"], first["rtom"], first["transfer_count"])
    del documents
    gc.collect()

    contenders = [("balance_seconds", balance_resources), ("reference_seconds", reference_balance)]
    best: dict[str, float] = {}
    for repeat in range(BALANCE_REPEATS):
        results = {}
        for name, function in contenders if repeat % 2 == 0 else contenders[::-1]:
            with collector_paused():
                started = time.perf_counter()
                results[name] = function(drcs, *transfer, Fraction(1, 5))
                seconds = time.perf_counter() - started
            best[name] = min(seconds, best.get(name, seconds))
        assert results["balance_seconds"] == results["reference_seconds"]
        moved = sum(1 for case_id, cell in results["balance_seconds"].items() if cell != drcs[case_id])
        del results  # freed outside the timed calls
    assert moved == 2 * transfer[3]
    return {**best, "moved": moved}


MAIN_REPEATS = 2


def compare_main(checkout: Path, size: int) -> dict[str, tuple[float, float]]:
    """main.py of another checkout (an earlier commit, say) and of this one at `size` cases on the embedded
    default, each on the file its own database_update.py generated, run in turns (other, this, other, this):
    {"other"|"this": (best seconds, peak MB of that run)}."""
    import shutil

    sides = {"other": checkout, "this": PROJECT_ROOT}
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as name:
        for side, root in sides.items():
            (Path(name) / side).mkdir()  # the scripts create no folder (issue 17)
            generate_embedded(root, size, Path(name) / side)
            shutil.copyfile(Path(name) / side / "db.bson", Path(name) / f"{side}.bson")
        for _ in range(MAIN_REPEATS):
            for side, root in sides.items():
                shutil.copyfile(Path(name) / f"{side}.bson", Path(name) / side / "db.bson")
                measured = run_main_measured(root, Path(name) / side)
                best[side] = min(measured, best.get(side, measured))
    return best


def describe_checkout(checkout: Path) -> str:
    """A checkout as its commit (`git describe`), or its folder's name outside git."""
    result = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty"], capture_output=True,
                            text=True)
    return f"commit {result.stdout.strip()}" if result.returncode == 0 else checkout.name


def measure_request_validation() -> tuple[int, float, float]:
    """Validating the largest amend request accepted, and refusing one of 16,000 distributions (seconds)."""
    from database_checks import MAX_DISTRIBUTIONS, validate_distributions
    from utils.Custom_Exceptions import TaskValidationError

    def entries(count: int) -> list[dict[str, Any]]:
        return [{"rtom": f"R{n}", "donor_drc_id": "D1", "receiver_drc_id": "D2", "transfer_count": 1}
                for n in range(count)]

    largest, hostile = entries(MAX_DISTRIBUTIONS), entries(16_000)
    started = time.perf_counter()
    validate_distributions(largest, "seq")
    accepted = time.perf_counter() - started
    started = time.perf_counter()
    try:
        validate_distributions(hostile, "seq")
    except TaskValidationError:
        refused = time.perf_counter() - started
    return MAX_DISTRIBUTIONS, accepted, refused


MEASUREMENTS = {"planning": measure_planning, "commands": measure_commands, "balance": measure_balance,
                "embedded": measure_embedded, "server-full": lambda size: measure_server_path(size, "full"),
                "server-push-down": lambda size: measure_server_path(size, "push-down")}


def in_subprocess(kind: str, size: int) -> dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, "--measure", kind, str(size)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.splitlines()[-1])


def print_server_path(sizes: list[int]) -> None:
    print("\none task on the server path (mongomock standing in for the server, every command counted through "
          "tests/instruments.py), the full read beside the push-down read:\n")
    print("| cases | read | commands | documents returned | MB returned | cases moved | same outcome | seconds |")
    print("|---:|---|---:|---:|---:|---:|---|---:|")
    for size in sizes:
        full, pushed = in_subprocess("server-full", size), in_subprocess("server-push-down", size)
        for name, figures in (("full", full), ("push-down", pushed)):
            same = "yes" if figures["digest"] == full["digest"] else "NO"
            print(f"| {size:,} | {name} | {figures['commands']} | {figures['documents']:,} "
                  f"| {figures['bytes'] / 1e6:.2f} | {figures['moved']:,} | {same} | {figures['seconds']:.1f} |",
                  flush=True)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES)
    parser.add_argument("--embedded-max", type=int, default=100_000,
                        help="largest batch run end to end on the embedded engine (default 100,000)")
    parser.add_argument("--server-sizes", type=int, nargs="*", default=[1_000, 100_000, 1_000_000],
                        help="batch sizes of the server path's table (default 1,000, 100,000 and 1,000,000; none "
                             "leaves the table out)")
    parser.add_argument("--compare-with", type=Path, metavar="CHECKOUT",
                        help="another checkout of the project (an earlier commit): its main.py is timed on the "
                             "embedded default too, beside this one's")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.measure:
        kind, size = args.measure
        print(json.dumps(MEASUREMENTS[kind](int(size))))
        return
    print(f"machine: {machine()}")
    print("garbage collector: paused during every measured phase, job and references alike, in the tables with "
          "references (balance_resources, the embedded default); the scripts' columns and the first table run as "
          "the job runs, pausing it while it loads, reads and plans\n")
    print("| cases | validate + index s | plan (3 distributions) s | peak MB | cases changed | commands per task "
          "| documents written | job s (stand-in) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        planning = in_subprocess("planning", size)
        commands = in_subprocess("commands", size)
        print(f"| {size:,} | {planning['read_seconds']:.2f} | {planning['plan_seconds']:.2f} "
              f"| {planning['peak_mb']:.0f} | {planning['changed']:,} | {commands['commands']} "
              f"| {commands['documents_written']:,} | {commands['job_seconds']:.1f} |", flush=True)
    if args.server_sizes:
        print_server_path(args.server_sizes)
    print("\nbalance_resources (one distribution: 5% of the donor's cases of one RTOM) beside a straightforward "
          "implementation of the same rule, best of both interleaved:\n")
    print("| cases | balance_resources s | reference s | ratio | cases moved |")
    print("|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        b = in_subprocess("balance", size)
        print(f"| {size:,} | {b['balance_seconds']:.3f} | {b['reference_seconds']:.3f} "
              f"| {b['balance_seconds'] / b['reference_seconds']:.2f} | {b['moved']:,} |", flush=True)
    print("\nthe embedded default, each figure beside its reference:\n")
    print("| cases | load + save s | bson.decode_all + bson.encode s | ratio | job phase s | planning in memory s "
          "| ratio | database_update --generate s | main.py s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    comparisons = []
    for size in [size for size in args.sizes if size <= args.embedded_max]:
        e = in_subprocess("embedded", size)
        load_save = e["load_seconds"] + e["save_seconds"]
        job_ratio = e["job_seconds"] / e["planning_seconds"]
        print(f"| {size:,} | {load_save:.2f} | {e['bson_seconds']:.2f} | {load_save / e['bson_seconds']:.1f} "
              f"| {e['job_seconds']:.2f} | {e['planning_seconds']:.2f} | {job_ratio:.1f} "
              f"| {e['reset_seconds']:.1f} | {e['run_seconds']:.1f} |", flush=True)
        if args.compare_with:
            comparisons.append((size, compare_main(args.compare_with, size)))
    if comparisons:
        print(f"\nmain.py on the embedded default, {describe_checkout(args.compare_with)} against this checkout "
              f"({describe_checkout(PROJECT_ROOT)}), run in turns, best of {MAIN_REPEATS} each:\n")
        print("| cases | other s | this s | ratio | other peak MB | this peak MB |")
        print("|---:|---:|---:|---:|---:|---:|")
        for size, best in comparisons:
            (other, other_mb), (this, this_mb) = best["other"], best["this"]
            print(f"| {size:,} | {other:.1f} | {this:.1f} | {this / other:.2f} | {other_mb:,.0f} | {this_mb:,.0f} |")
    largest, accepted, refused = measure_request_validation()
    print(f"\nvalidating an amend request of {largest:,} distributions: {accepted * 1000:.1f} ms; "
          f"refusing one of 16,000: {refused * 1000:.3f} ms")


if __name__ == "__main__":
    main()
