"""Reset the job's five collections from JSON fixtures (or a generated batch, --generate N) and
create the indexes the job relies on."""

import itertools
import sys
from pathlib import Path

import bson
from bson import ObjectId, json_util
from bson.errors import BSONError
from bson.json_util import RELAXED_JSON_OPTIONS
from pymongo.errors import PyMongoError

from database_checks import MAX_DISTRIBUTIONS
from fixture_generator import BatchShape, generate_batch
from utils.cli import OneLineArgumentParser, bounded_int, run_script
from utils.config import DEFAULT_CONFIG_DIR, PROJECT_ROOT, load_database_settings
from utils.connectDB import (
    CASES_COLLECTION,
    JOB_COLLECTIONS,
    JOURNAL_COLLECTION,
    RUN_HISTORY_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
    database_session,
)
from utils.Custom_Exceptions import DatabaseUpdateError, TaskProcessingError
from utils.read_template_task_id_ini import read_template_task_id
from utils.secrets import scrub

DEFAULT_DATA_DIR = PROJECT_ROOT / "data"
EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
INSERT_CHUNK = 10_000
MONGODB_MAX_DEPTH = 100
MONGODB_MAX_DOCUMENT_BYTES = 16 * 2**20
MAX_GENERATED_CASES = 10_000_000

# (collection, index keys, index name); created idempotently, also listed in the README.
INDEXES = (
    (TASKS_COLLECTION, [("task_status", 1), ("task_type", 1), ("created_dtm", 1), ("Task_Id", 1)], "open_tasks"),
    (TEMPLATES_COLLECTION, [("Template_Task_Id", 1), ("task_type", 1)], "template_id_type"),
    (TRANSACTIONS_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("summery_status", 1)], "batch_status"),
    (CASES_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("Case_Id", 1)], "batch_case"),
    (SUMMARY_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("DRC_Id", 1), ("RTOM", 1)], "batch_drc_rtom"),
    (JOURNAL_COLLECTION, [("task_object_id", 1)], "journal_task"),
    (RUN_HISTORY_COLLECTION, [("started_dtm", -1)], "run_started"),
)

# Dates come back naive UTC, as pymongo returns them from a server.
JSON_OPTIONS = RELAXED_JSON_OPTIONS.with_options(tz_aware=False)


def _described(document, index):
    identity = f" (_id {document['_id']!r})" if isinstance(document.get("_id"), (str, int, ObjectId)) else ""
    return f"document {index}{identity}"


def check_fixture_document(document):
    """None, or why MongoDB would refuse `document` or misread it: every key a plain name (no NUL, no
    leading $, no dot), at most MONGODB_MAX_DEPTH levels, integers of at most 8 bytes, under 16 MB."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MONGODB_MAX_DEPTH:
            return f"it is nested deeper than the {MONGODB_MAX_DEPTH} levels MongoDB allows"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict):
                if "\0" in key:
                    return f"the key {key!r} holds a NUL character"
                if key.startswith("$"):
                    return f"the key {key!r} starts with '$' (a misspelt Extended JSON type such as $oid or $date?)"
                if "." in key:
                    return f"the key {key!r} holds a dot, which MongoDB queries read as a path"
            if isinstance(item, (dict, list)):
                pending.append((item, depth + 1))
    try:
        size = len(bson.encode(document))
    except (OverflowError, BSONError) as exc:
        return f"it cannot be stored in MongoDB: {exc}"
    if size > MONGODB_MAX_DOCUMENT_BYTES:
        return f"it takes {size:,} bytes, over MongoDB's 16 MB document limit"
    return None


def read_fixture(path):
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
    seen_ids = {}
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


def read_fixtures(data_dir):
    """Every fixture read and checked before anything is deleted."""
    return {name: read_fixture(Path(data_dir) / f"{name}.json") for name in JOB_COLLECTIONS}


def create_indexes(db):
    for collection, keys, name in INDEXES:
        db[collection].create_index(keys, name=name)


def reset_collections(db, fixtures):
    """Delete the documents of the five collections and the job's journal, insert the fixtures
    (any iterable, inserted in chunks so a generated million cases never sit in memory at once),
    create the indexes."""
    db[JOURNAL_COLLECTION].delete_many({})
    counts = {}
    for name, documents in fixtures.items():
        db[name].delete_many({})
        counts[name] = 0
        iterator = iter(documents)
        while chunk := list(itertools.islice(iterator, INSERT_CHUNK)):
            db[name].insert_many(chunk)
            counts[name] += len(chunk)
    create_indexes(db)
    return counts


def confirmed(settings, assume_yes, ask=input, interactive=None):
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


def build_parser():
    parser = OneLineArgumentParser(
        prog="database_update.py",
        description="Delete the documents of the job's five collections, import DIR/<collection>.json "
                    "for each (MongoDB Extended JSON) and create the indexes the job uses.",
        epilog="exit codes: 0 done, 1 refused (no confirmation), 2 configuration, fixture or database error")
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
                           help=f"number of cases (at most {MAX_GENERATED_CASES:,})")
    generated.add_argument("--drcs", type=bounded_int(1, 1_000), default=10, metavar="K",
                           help="number of DRCs (default 10)")
    generated.add_argument("--rtoms", type=bounded_int(1, 1_000), default=8, metavar="R",
                           help="number of RTOMs (default 8)")
    generated.add_argument("--distributions", type=bounded_int(1, MAX_DISTRIBUTIONS), default=3, metavar="M",
                           help="distributions of the amend request (default 3)")
    generated.add_argument("--seed", type=bounded_int(), default=1, help="random seed (default 1)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_database_settings(args.config_dir)
        if args.generate:
            try:
                shape = BatchShape(cases=args.generate, drcs=args.drcs, rtoms=args.rtoms,
                                   distributions=args.distributions, seed=args.seed,
                                   template_task_id=read_template_task_id(args.config_dir))
            except ValueError as exc:
                parser.error(str(exc))
            fixtures = generate_batch(shape)
        else:
            fixtures = read_fixtures(args.data_dir)
        if not confirmed(settings, args.yes):
            print(f"database_update: refused to reset {settings.db_name} on {settings.redacted_uri} "
                  f"without confirmation; run it with --yes", file=sys.stderr)
            return EXIT_REFUSED
        with database_session(settings) as db:
            counts = reset_collections(db, fixtures)
    except (TaskProcessingError, PyMongoError) as exc:
        print(scrub(f"database_update: {exc}"), file=sys.stderr)
        return EXIT_ERROR
    imported = ", ".join(f"{name} {count}" for name, count in counts.items())
    print(f"database_update: {settings.db_name} on {settings.redacted_uri} reset; imported {imported}")
    return EXIT_OK


if __name__ == "__main__":
    run_script(main, "database_update", "on the embedded default nothing was changed; on a server, run it again")
