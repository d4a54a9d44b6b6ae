"""Reset the job's five collections from JSON fixtures (or a generated batch, --generate N) and
create the indexes the job relies on; or, instead, bring the indexes up to date on a database in
use (--indexes), or back up (--backup FILE) and restore (--restore FILE) the embedded data file."""

if __name__ == "__main__":  # before the other imports, which take a while: a signal meanwhile is one line
    from utils.starting import stop_quietly_while_starting
    stop_quietly_while_starting("database_update")


import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import bson
from bson import ObjectId, json_util
from bson.errors import BSONError
from bson.json_util import RELAXED_JSON_OPTIONS
from pymongo.errors import PyMongoError

from amend_store import (
    CASES_COLLECTION,
    INDEXES,
    JOB_COLLECTIONS,
    JOURNAL_COLLECTION,
    RUN_HISTORY_COLLECTION,
    AmendStore,
    Clock,
    utc_now,
)
from database_checks import MAX_DISTRIBUTIONS
from fixture_generator import MIN_CASES, BatchShape, amend_distributions, generate_batch, generate_history
from history.store import RETENTION_INDEX, RETENTION_KEYS, add_runs, keep_history_within
from ops.output_files import refuse_a_file_of_the_database
from update_databases import reset_collections
from utils.cli import (
    ExitStatus,
    Interrupted,
    OneLineArgumentParser,
    StoppedBeforeWork,
    bounded_int,
    exit_code_lines,
    named_path,
    run_script,
    stopped_codes,
)
from utils.config import DEFAULT_CONFIG_DIR, PROJECT_ROOT, DatabaseSettings, Settings, load_config
from utils.connectDB import database_session
from utils.Custom_Exceptions import ConfigurationError, DatabaseUpdateError, TaskProcessingError
from utils.documents import Document
from utils.loggers import get_logger, log_to_console, progress_bar
from utils.one_line import one_line
from utils.secrets import scrub

DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
MONGODB_MAX_DEPTH = 100
MONGODB_MAX_DOCUMENT_BYTES = 16 * 2**20
MAX_GENERATED_CASES = 10_000_000
MAX_GENERATED_RUNS = 100_000

log = get_logger("reset")

# Dates come back naive UTC, as pymongo returns them from a server.
JSON_OPTIONS = RELAXED_JSON_OPTIONS.with_options(tz_aware=False)


def _described(document: Document, index: int) -> str:
    identity = f" (_id {document['_id']!r})" if isinstance(document.get("_id"), (str, int, ObjectId)) else ""
    return f"document {index}{identity}"


def check_fixture_document(document: Document) -> str | None:
    """None, or why MongoDB would refuse `document` or misread it: every key a plain name (no NUL, no
    leading $, no dot), at most MONGODB_MAX_DEPTH levels, integers of at most 8 bytes, under 16 MB."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MONGODB_MAX_DEPTH:
            return f"it is nested deeper than the {MONGODB_MAX_DEPTH} levels MongoDB allows"
        if isinstance(value, dict):
            for key in value:
                if "\0" in key:
                    return f"the key {key!r} holds a NUL character"
                if key.startswith("$"):
                    return f"the key {key!r} starts with '$' (a misspelt Extended JSON type such as $oid or $date?)"
                if "." in key:
                    return f"the key {key!r} holds a dot, which MongoDB queries read as a path"
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    try:
        size = len(bson.encode(document))
    except (OverflowError, BSONError) as exc:
        return f"it cannot be stored in MongoDB: {exc}"
    if size > MONGODB_MAX_DOCUMENT_BYTES:
        return f"it takes {size:,} bytes, over MongoDB's 16 MB document limit"
    return None


def read_fixture(path: Path) -> list[Document]:
    """The documents of one Extended JSON file (an array of objects or a single object), each checked."""
    try:
        content = json_util.loads(path.read_text(encoding="utf-8"), json_options=JSON_OPTIONS)
    except FileNotFoundError:
        raise DatabaseUpdateError(f"fixture {path} is missing") from None
    except RecursionError:
        raise DatabaseUpdateError(f"fixture {path} is nested too deeply to be read (MongoDB allows "
                                  f"{MONGODB_MAX_DEPTH} levels)") from None
    # json_util reports a malformed $date, $oid or $numberLong with any of these.
    except (OSError, ValueError, TypeError, IndexError, KeyError, OverflowError, BSONError) as exc:
        raise DatabaseUpdateError(f"fixture {path} is not valid Extended JSON: {exc}") from exc
    documents = content if isinstance(content, list) else [content]
    seen_ids: dict[bytes, int] = {}
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            raise DatabaseUpdateError(f"fixture {path}: element {index} is not an object")
        problem = check_fixture_document(document)
        if problem:
            raise DatabaseUpdateError(f"fixture {path}: {_described(document, index)}: {problem}")
        if "_id" in document:
            key = bson.encode({"_id": document["_id"]})
            if key in seen_ids:
                raise DatabaseUpdateError(f"fixture {path}: {_described(document, index)} repeats the _id of "
                                          f"document {seen_ids[key]}")
            seen_ids[key] = index
    return documents


def read_fixtures(data_dir: Path) -> dict[str, list[Document]]:
    """Every fixture read and checked before anything is deleted."""
    return {name: read_fixture(Path(data_dir) / f"{name}.json") for name in JOB_COLLECTIONS}


def answered_yes(question: str, ask: Callable[[str], str], interactive: bool | None) -> bool:
    """An interactive "yes" to `question`; without a terminal, or on Ctrl-D, the answer is no. Ctrl-C or SIGTERM
    at the question stops the script (StoppedBeforeWork: its line says that nothing was changed)."""
    interactive = sys.stdin.isatty() if interactive is None else interactive
    if not interactive:
        return False
    try:
        answer = ask(question)
    except EOFError:  # Ctrl-D: no answer is a no
        print(file=sys.stderr)
        return False
    except (KeyboardInterrupt, Interrupted) as stop:
        print(file=sys.stderr)  # the line that says so goes below the question, not after it
        raise StoppedBeforeWork(stop.signal_number if isinstance(stop, Interrupted) else signal.SIGINT) from None
    return answer.strip().lower() == "yes"


def confirmed(settings: DatabaseSettings, assume_yes: bool, ask: Callable[[str], str] = input,
              interactive: bool | None = None) -> bool:
    """Deleting data outside the embedded default needs --yes or an interactive "yes"."""
    if settings.is_embedded or assume_yes:
        return True
    return answered_yes(f"Delete every document of {len(JOB_COLLECTIONS)} collections in {settings.db_name} "
                        f"on {settings.redacted_uri} and import the fixtures? Type yes: ", ask, interactive)


def restore_confirmed(data_file: Path, backup: Path, documents: int, assume_yes: bool,
                      ask: Callable[[str], str] = input, interactive: bool | None = None) -> bool:
    """Replacing the embedded data file by a backup needs --yes or an interactive "yes"."""
    return assume_yes or answered_yes(f"Replace the embedded database file {data_file} by the backup {backup} "
                                      f"({documents} document(s))? The replaced file is kept beside it. Type yes: ",
                                      ask, interactive)


STOP_CONSEQUENCE = "on the embedded default nothing was changed; on a server, run it again"
# --help's word on a stop: at a confirmation question the line says only that nothing was changed.
STOP_HELP = f"{STOP_CONSEQUENCE} (at a confirmation question: nothing was changed)"
EXIT_CODES = {
    ExitStatus.OK: "done",
    ExitStatus.REFUSED: "refused: a reset of a database other than the embedded default, or a --restore, and no "
                        "--yes nor an interactive yes (Ctrl-D at the question is a no)",
    ExitStatus.SETUP_ERROR: "configuration, fixture or command-line error (checked before anything is deleted: "
                            "the database is untouched), an existing index that conflicts with the job's "
                            "(--indexes: nothing was changed), a missing or damaged data file or backup, or a "
                            "database error (on a server, run it again)",
    **stopped_codes(STOP_HELP),
}


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="database_update.py",
        description="Delete the documents of the job's five collections, import DIR/<collection>.json "
                    "for each (MongoDB Extended JSON) and create the indexes the job uses; on the embedded "
                    "default, create the data file if it does not exist (its folder must). Or, instead, one "
                    "of --indexes, --backup FILE, --restore FILE.",
        epilog=exit_code_lines(EXIT_CODES), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=named_path("a folder"),
                        help="folder of the fixtures (default: data/ of the project)")
    parser.add_argument("--config-dir", type=named_path("a folder"), default=DEFAULT_CONFIG_DIR,
                        help="folder of the INI files (default: config/ of the project)")
    parser.add_argument("--yes", action="store_true",
                        help="do not ask before deleting data of a database other than the embedded default, nor "
                             "before a --restore")
    instead = parser.add_argument_group("instead of a reset").add_mutually_exclusive_group()
    instead.add_argument("--indexes", action="store_true",
                         help="create or update the indexes the job uses, and nothing else (no document is "
                              "deleted, nothing is asked); says per index: created, kept or changed; refuses, "
                              "changing nothing, when an existing index conflicts with one of the job's")
    instead.add_argument("--backup", type=named_path("a file"), metavar="FILE",
                         help="embedded default only: write a checked copy of the data file, taken under its lock, "
                              "to FILE (a new file: an existing one is never overwritten)")
    instead.add_argument("--restore", type=named_path("a file"), metavar="FILE",
                         help="embedded default only: check the backup FILE in full, then, once confirmed (--yes), "
                              "replace the data file by it, keeping the replaced file beside it as "
                              "<data file>.replaced-<UTC time>")
    generated = parser.add_argument_group(
        "generated batch", "instead of the fixtures of --data-dir, import one generated batch (id GEN) of N cases "
                           "with its open amend task, to try the job at scale; the same arguments give the same data")
    generated.add_argument("--generate", type=bounded_int(1, MAX_GENERATED_CASES), metavar="N",
                           help=f"number of cases ({MIN_CASES} to {MAX_GENERATED_CASES:,})")
    for option, bounds, default, metavar, meaning in GENERATOR_OPTIONS:
        generated.add_argument(option, type=bounded_int(*bounds), metavar=metavar,
                               help=f"{meaning} (default {default})")
    parser.add_argument("--generate-history", type=bounded_int(1, MAX_GENERATED_RUNS), metavar="RUNS",
                        help=f"also add RUNS generated runs (one every 2 hours, ending now) to "
                             f"{RUN_HISTORY_COLLECTION}, to see the dashboard and the monitor at work; the recorded "
                             f"runs are kept")
    return parser


# (option, bounds, default, metavar, meaning) of the options that shape a generated batch
GENERATOR_OPTIONS = (("--drcs", (1, 1_000), 10, "K", "number of DRCs"),
                     ("--rtoms", (1, 1_000), 8, "R", "number of RTOMs"),
                     ("--distributions", (1, MAX_DISTRIBUTIONS), 3, "M", "distributions of the amend request"),
                     ("--seed", (-(2**63), 2**63 - 1), 1, "S", "random seed"))


def generated_fixtures(parser: OneLineArgumentParser, args: argparse.Namespace,
                       template_task_id: int) -> dict[str, Iterable[Document]]:
    """The documents of the batch --generate asks for, each collection counted on a progress bar."""
    shape_options = {option[2:]: getattr(args, option[2:]) for option, *_ in GENERATOR_OPTIONS}
    given = [f"--{name}" for name, value in shape_options.items() if value is not None]
    if not args.generate:
        if given:
            parser.error(f"{', '.join(given)} shape(s) a generated batch: give --generate N too")
        return {}
    defaults = {option[2:]: default for option, _, default, *_ in GENERATOR_OPTIONS}
    chosen = {name: defaults[name] if value is None else value for name, value in shape_options.items()}
    try:
        shape = BatchShape(cases=args.generate, drcs=chosen["drcs"], rtoms=chosen["rtoms"],
                           distributions=chosen["distributions"], seed=chosen["seed"],
                           template_task_id=template_task_id)
    except ValueError as exc:
        parser.error(str(exc))
    started = time.monotonic()
    documents = generate_batch(shape)
    log.info("generated batch %s: %d case(s), an amend request of %d distribution(s), in %.2f s", shape.batch_id,
             shape.cases, len(amend_distributions(documents)), time.monotonic() - started)
    documents[CASES_COLLECTION] = progress_bar(documents[CASES_COLLECTION], "importing cases", "case",
                                               total=shape.cases)
    return documents


def main(argv: Sequence[str] | None = None, clock: Clock = utc_now) -> int:
    """The reset, or the task of --indexes, --backup or --restore; `clock` gives the end of a
    --generate-history, the moment of an --indexes (for the retention it applies) and the name of the file
    a --restore keeps."""
    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_reset_options_with_a_task(parser, args)
    log_to_console()
    try:
        return run_task(parser, args, load_config(args.config_dir), clock)
    except (TaskProcessingError, PyMongoError) as exc:
        print(one_line(scrub(f"database_update: {exc}")), file=sys.stderr)
        return ExitStatus.SETUP_ERROR


# (option, dest) of the options that shape the reset, refused with --indexes, --backup or --restore
RESET_OPTIONS = (("--data-dir", "data_dir"), ("--generate", "generate"), ("--generate-history", "generate_history"),
                 *((option, option[2:]) for option, *_ in GENERATOR_OPTIONS))


def refuse_reset_options_with_a_task(parser: OneLineArgumentParser, args: argparse.Namespace) -> None:
    """--indexes, --backup and --restore take none of the options that shape a reset."""
    task = "--indexes" if args.indexes else "--backup" if args.backup else "--restore" if args.restore else None
    reset_options = [option for option, dest in RESET_OPTIONS if getattr(args, dest) is not None]
    if task and reset_options:
        parser.error(f"{', '.join(reset_options)} belong(s) to the reset: not with {task}")


def run_task(parser: OneLineArgumentParser, args: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """The task the options name: --indexes, --backup, --restore, else the reset."""
    if args.indexes:
        return update_indexes(settings, clock)
    if args.backup:
        return back_up(settings, args.backup)
    if args.restore:
        return restore(settings, args.restore, args.yes, clock)
    return reset(parser, args, settings, clock)


def reset(parser: OneLineArgumentParser, args: argparse.Namespace, settings: Settings, clock: Clock) -> int:
    """The fixtures (or the generated batch) in place of the five collections' documents, after confirmation."""
    fixtures = (generated_fixtures(parser, args, settings.job.template_task_id)
                or dict(read_fixtures(args.data_dir or DEFAULT_DATA_DIR)))
    database = settings.database
    if not confirmed(database, args.yes):
        print(one_line(f"database_update: refused to reset {database.db_name} on {database.redacted_uri} "
                       f"without confirmation; run it with --yes"), file=sys.stderr)
        return ExitStatus.REFUSED
    # The collections about to be replaced are not even loaded from the embedded file, which the reset may create.
    with database_session(database, skip=(*fixtures, JOURNAL_COLLECTION), create=True) as opened:
        started = time.monotonic()
        store = AmendStore(opened, settings.job.retry)
        counts = reset_collections(store, fixtures)
        log.info("replaced the documents of %d collection(s) by %d and created the indexes in %.2f s",
                 len(counts), sum(counts.values()), time.monotonic() - started)
        if args.generate_history:
            add_runs(store, generate_history(args.generate_history, end=clock()))
            counts[RUN_HISTORY_COLLECTION] = args.generate_history
            log.info("added %d generated run(s) to %s", args.generate_history, RUN_HISTORY_COLLECTION)
    imported = ", ".join(f"{name} {count}" for name, count in counts.items())
    print(one_line(f"database_update: {database.db_name} on {database.redacted_uri} reset; imported {imported}"))
    return ExitStatus.OK


# --- --indexes ------------------------------------------------------------------------------------

# What an index's description holds besides its options: its keys, its format version, the namespace older
# servers add, and `background`, which servers ignore since 4.2.
NOT_OPTIONS = frozenset({"key", "v", "ns", "background"})
# (collection, keys, name, options) of an index the job uses
IndexSpec = tuple[str, list[tuple[str, int]], str, dict[str, Any]]


def job_indexes(retention_days: int | None) -> list[IndexSpec]:
    """amend_store.INDEXES, and the run history's TTL index when a period is given."""
    indexes: list[IndexSpec] = [(collection, keys, name, {}) for collection, keys, name in INDEXES]
    if retention_days is not None:
        indexes.append((RUN_HISTORY_COLLECTION, RETENTION_KEYS, RETENTION_INDEX,
                        {"expireAfterSeconds": retention_days * 86_400}))
    return indexes


def index_options(description: Mapping[str, Any]) -> dict[str, Any]:
    """The options of an index as index_information describes it (a flag set to false is no option)."""
    return {name: value for name, value in description.items() if name not in NOT_OPTIONS and value is not False}


def _keys_text(keys: Iterable[tuple[str, Any]]) -> str:
    return "{" + ", ".join(f"{field}: {direction}" for field, direction in keys) + "}"


def index_change(existing: Mapping[str, Mapping[str, Any]], spec: IndexSpec) -> str:
    """What --indexes does to one index of the job, given the indexes of its collection: created, kept, or
    changed (a TTL's period, which collMod updates in place); a DatabaseUpdateError when an index conflicts."""
    collection, keys, name, options = spec
    for other, description in existing.items():
        if other != name and list(description["key"]) == keys:
            raise DatabaseUpdateError(
                f"index {other} of {collection} has the keys {_keys_text(keys)} of the job's index {name}; nothing "
                f"was changed: drop it (or rename it {name}), then run --indexes again")
    if name not in existing:
        return "created"
    if list(existing[name]["key"]) != keys:
        raise DatabaseUpdateError(
            f"index {name} of {collection} has the keys {_keys_text(existing[name]['key'])} where the job's has "
            f"{_keys_text(keys)}; nothing was changed: drop it, then run --indexes again")
    found = index_options(existing[name])
    if found == options:
        return "kept"
    if set(found) == set(options) == {"expireAfterSeconds"}:
        return "changed"
    raise DatabaseUpdateError(
        f"index {name} of {collection} has the options {found or 'none'} where the job's has {options or 'none'}; "
        f"nothing was changed: drop it, then run --indexes again")


def _change_ttl(store: AmendStore, collection: str, name: str, options: dict[str, Any]) -> None:
    store.write(f"changing the period of index {name} of {collection}",
                lambda: store.database.command("collMod", collection, index={"name": name, **options}))


def ensure_indexes(store: AmendStore, retention_days: int | None, now: datetime) -> list[tuple[IndexSpec, str]]:
    """The job's indexes (with the run history's TTL index when `retention_days` is given) created or brought
    up to date, each with what was done to it. Every index is checked before any is touched: a conflict
    changes nothing. They are created where the reset and the job create them (AmendStore.create_indexes,
    history/store.py keep_history_within); a TTL's new period is set in place with collMod."""
    indexes = job_indexes(retention_days)
    existing = {collection: store.read(f"reading the indexes of {collection}", store[collection].index_information)
                for collection in {spec[0] for spec in indexes}}
    changes = [(spec, index_change(existing[spec[0]], spec)) for spec in indexes]
    for (collection, _, name, options), change in changes:
        if change == "changed":
            _change_ttl(store, collection, name, options)
    store.create_indexes()
    if retention_days is not None:
        keep_history_within(store, retention_days, now, ttl_index=True)
    return changes


def update_indexes(settings: Settings, clock: Clock) -> int:
    """--indexes: print what was done to each index."""
    database = settings.database
    # The TTL index of the run history is a server's: on the embedded default a run deletes the old runs itself
    # (its engine expires nothing between runs, its data file keeps no index option but unique, and mongomock has
    # no collMod to change a period), so --indexes leaves it out there.
    retention_days = None if database.is_embedded else settings.job.history_retention_days
    with database_session(database) as opened:
        changes = ensure_indexes(AmendStore(opened, settings.job.retry), retention_days, clock())
    for (collection, _, name, options), change in changes:
        period = f" (expireAfterSeconds {options['expireAfterSeconds']})" if options and change != "kept" else ""
        print(f"database_update: index {name} of {collection}: {change}{period}")
    if retention_days is None:
        why = ("not used on the embedded default (each run deletes the runs past [HISTORY] RETENTION_DAYS)"
               if database.is_embedded else "not used: [HISTORY] RETENTION_DAYS is not set (a run drops it)")
        print(f"database_update: index {RETENTION_INDEX} of {RUN_HISTORY_COLLECTION}: {why}")
    done = {change: sum(1 for _, other in changes if other == change) for change in ("created", "changed", "kept")}
    print(one_line(f"database_update: indexes of {database.db_name} on {database.redacted_uri}: "
                   + ", ".join(f"{count} {change}" for change, count in done.items())))
    return ExitStatus.OK


# --- --backup and --restore of the embedded default ----------------------------------------------

def embedded_only(settings: DatabaseSettings, option: str, tool: str) -> None:
    if not settings.is_embedded:
        raise ConfigurationError(f"{option} is for the embedded default; {settings.db_name} on "
                                 f"{settings.redacted_uri} is a server: use {tool}")


def back_up(settings: Settings, target: Path) -> int:
    """--backup FILE: a checked copy of the data file, under its lock, to a new file."""
    from embedded.data_file import EmbeddedDatabaseFile

    database = settings.database
    embedded_only(database, "--backup", "mongodump")
    if os.path.lexists(target):
        raise ConfigurationError(f"backup {target} exists already; a backup never overwrites a file: give another "
                                 f"name")
    if not target.parent.is_dir():
        raise ConfigurationError(f"the folder {target.parent} of backup {target.name} does not exist")
    refuse_a_file_of_the_database(f"backup {target}", target, database.embedded_path)
    data_file = EmbeddedDatabaseFile(database.embedded_path, database.db_name, database.lock_timeout_seconds)
    documents = data_file.back_up(target)
    print(one_line(f"database_update: backed up {data_file.path} to {target} ({documents} document(s)); restore "
                   f"it with database_update.py --restore {target}"))
    return ExitStatus.OK


def restore(settings: Settings, backup: Path, assume_yes: bool, clock: Clock) -> int:
    """--restore FILE: the backup checked in full, then, once confirmed, in place of the data file, which is kept
    beside it under a name with the time of the restore."""
    from embedded.data_file import EmbeddedDatabaseFile, document_count, read_backup

    database = settings.database
    embedded_only(database, "--restore", "mongorestore")
    data_file = EmbeddedDatabaseFile(database.embedded_path, database.db_name, database.lock_timeout_seconds,
                                     create=True)
    data_file.check_location()
    if backup.exists() and data_file.path.exists() and backup.samefile(data_file.path):
        raise ConfigurationError(f"backup {backup} is the data file itself; nothing was restored: give the backup's "
                                 f"name")
    content = read_backup(backup, database.db_name)
    documents = document_count(content)
    if not restore_confirmed(data_file.path, backup, documents, assume_yes):
        print(one_line(f"database_update: refused to replace {data_file.path} by the backup {backup} without "
                       f"confirmation; run it with --yes"), file=sys.stderr)
        return ExitStatus.REFUSED
    aside = data_file.path.with_name(f"{data_file.path.name}.replaced-{clock():%Y%m%dT%H%M%SZ}")
    kept = data_file.replace_with(content, aside)
    print(one_line(f"database_update: restored {data_file.path} from {backup} ({documents} document(s)); "
                   + (f"the file it replaced is kept as {aside}" if kept else "there was no data file to keep")))
    return ExitStatus.OK


if __name__ == "__main__":
    run_script(main, "database_update", STOP_CONSEQUENCE)
