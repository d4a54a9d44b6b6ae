"""Reset the job's five collections from JSON fixtures (or a generated batch, --generate N) and
create the indexes the job relies on."""

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import bson
from bson import ObjectId, json_util
from bson.errors import BSONError
from bson.json_util import RELAXED_JSON_OPTIONS
from pymongo.errors import PyMongoError

from amend_store import (
    CASES_COLLECTION,
    JOB_COLLECTIONS,
    JOURNAL_COLLECTION,
    RUN_HISTORY_COLLECTION,
    AmendStore,
    Clock,
    utc_now,
)
from database_checks import MAX_DISTRIBUTIONS
from fixture_generator import MIN_CASES, BatchShape, amend_distributions, generate_batch, generate_history
from history.store import add_runs
from update_databases import reset_collections
from utils.cli import ExitStatus, OneLineArgumentParser, bounded_int, exit_code_lines, run_script, stopped_codes
from utils.config import DEFAULT_CONFIG_DIR, PROJECT_ROOT, DatabaseSettings, load_config
from utils.connectDB import database_session
from utils.Custom_Exceptions import DatabaseUpdateError, TaskProcessingError
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


def confirmed(settings: DatabaseSettings, assume_yes: bool, ask: Callable[[str], str] = input,
              interactive: bool | None = None) -> bool:
    """Deleting data outside the embedded default needs --yes or an interactive "yes"."""
    if settings.is_embedded or assume_yes:
        return True
    interactive = sys.stdin.isatty() if interactive is None else interactive
    if not interactive:
        return False
    try:
        answer = ask(f"Delete every document of {len(JOB_COLLECTIONS)} collections in {settings.db_name} "
                     f"on {settings.redacted_uri} and import the fixtures? Type yes: ")
    except EOFError:  # Ctrl-D: no answer is a no
        print(file=sys.stderr)
        return False
    return answer.strip().lower() == "yes"


STOP_CONSEQUENCE = "on the embedded default nothing was changed; on a server, run it again"
EXIT_CODES = {
    ExitStatus.OK: "done",
    ExitStatus.REFUSED: "refused: a database other than the embedded default, and no --yes nor an interactive yes "
                        "(Ctrl-D at the question is a no)",
    ExitStatus.SETUP_ERROR: "configuration, fixture or command-line error (checked before anything is deleted: "
                            "the database is untouched), or a database error (on a server, run it again)",
    **stopped_codes(STOP_CONSEQUENCE),
}


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="database_update.py",
        description="Delete the documents of the job's five collections, import DIR/<collection>.json "
                    "for each (MongoDB Extended JSON) and create the indexes the job uses.",
        epilog=exit_code_lines(EXIT_CODES), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder of the fixtures (default: data/ of the project)")
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR,
                        help="folder of the INI files (default: config/ of the project)")
    parser.add_argument("--yes", action="store_true",
                        help="do not ask before deleting data of a database other than the embedded default")
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
    """The reset; `clock` gives the end of a --generate-history."""
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_console()
    try:
        settings = load_config(args.config_dir)
        fixtures = generated_fixtures(parser, args, settings.job.template_task_id) or dict(read_fixtures(args.data_dir))
        database = settings.database
        if not confirmed(database, args.yes):
            print(one_line(f"database_update: refused to reset {database.db_name} on {database.redacted_uri} "
                           f"without confirmation; run it with --yes"), file=sys.stderr)
            return ExitStatus.REFUSED
        # The collections about to be replaced are not even loaded from the embedded file.
        with database_session(database, skip=(*fixtures, JOURNAL_COLLECTION)) as opened:
            started = time.monotonic()
            store = AmendStore(opened, settings.job.retry)
            counts = reset_collections(store, fixtures)
            log.info("replaced the documents of %d collection(s) by %d and created the indexes in %.2f s",
                     len(counts), sum(counts.values()), time.monotonic() - started)
            if args.generate_history:
                add_runs(store, generate_history(args.generate_history, end=clock()))
                counts[RUN_HISTORY_COLLECTION] = args.generate_history
                log.info("added %d generated run(s) to %s", args.generate_history, RUN_HISTORY_COLLECTION)
    except (TaskProcessingError, PyMongoError) as exc:
        print(one_line(scrub(f"database_update: {exc}")), file=sys.stderr)
        return ExitStatus.SETUP_ERROR
    imported = ", ".join(f"{name} {count}" for name, count in counts.items())
    print(one_line(f"database_update: {database.db_name} on {database.redacted_uri} reset; imported {imported}"))
    return ExitStatus.OK


if __name__ == "__main__":
    run_script(main, "database_update", STOP_CONSEQUENCE)
