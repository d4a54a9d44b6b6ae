"""The database connection: pymongo against a server, or the embedded default file.

The embedded engine (mongomock, and the patches of embedded/mongomock_compat.py) is imported only
when the configured URI is embedded://: a run against a server never loads it.
"""

from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from pymongo import MongoClient
from pymongo.errors import ConfigurationError as PyMongoConfigurationError
from pymongo.errors import PyMongoError

from utils.config import DatabaseSettings
from utils.Custom_Exceptions import ConfigurationError, DatabaseConnectionError
from utils.secrets import scrub

if TYPE_CHECKING:
    from embedded.data_file import FinalWrite

_session_database: Any = None


def uri_sets_write_concern(uri: str) -> bool:
    return any(option.partition("=")[0].lower() == "w" for option in uri.partition("?")[2].split("&"))


@contextmanager
def _server_database(settings: DatabaseSettings) -> Iterator[Any]:
    # Fencing tokens and journals must survive a failover: majority write concern (MongoDB's
    # default since 5.0), unless the URI deliberately sets another.
    options: dict[str, Any] = {"serverSelectionTimeoutMS": settings.server_selection_timeout_ms,
                               "connectTimeoutMS": settings.server_selection_timeout_ms}
    if not uri_sets_write_concern(settings.uri):
        options["w"] = "majority"
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(settings.uri, **options)
    except (PyMongoConfigurationError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"MONGO_URI {settings.redacted_uri!r} is not valid: {scrub(exc)}") from None
    try:
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            reason = str(exc).split(", Timeout:")[0]
            raise DatabaseConnectionError(
                f"cannot reach MongoDB at {settings.redacted_uri} within "
                f"{settings.server_selection_timeout_ms} ms: {reason}") from None
        yield client[settings.db_name]
    finally:
        client.close()


@contextmanager
def database_session(settings: DatabaseSettings, read_only: bool = False, skip: Collection[str] = (),
                     final_write: "FinalWrite | None" = None, create: bool = False) -> Iterator[Any]:
    """Open the configured database for the duration of a script; get_db_connection() returns it.

    On the embedded default: `read_only` reads the last saved file without its lock and never
    saves; `skip` names collections whose documents are not loaded (about to be replaced);
    `create` (database_update.py only) lets a missing data file be created, which is otherwise
    an error saying to run database_update.py. Nothing creates the file's folder.
    `final_write` (collection, write) is made when the block ends without an exception: on a
    server right then, on the embedded default while the file is saved, after every other
    collection, so that it can report the whole session.
    """
    global _session_database
    opened: AbstractContextManager[Any]
    if settings.is_embedded:
        from embedded.data_file import EmbeddedDatabaseFile

        opened = EmbeddedDatabaseFile(settings.embedded_path, settings.db_name, settings.lock_timeout_seconds,
                                      read_only, skip, final_write, create)
    else:
        opened = _server_database(settings)
    with opened as database:
        _session_database = database
        try:
            yield database
            if final_write is not None and not settings.is_embedded:
                final_write[1](database)
        finally:
            _session_database = None


def get_db_connection() -> Any:
    """The database of the open session (see database_session)."""
    if _session_database is None:
        raise DatabaseConnectionError("no database session is open: open one with database_session(settings)")
    return _session_database


def get_collection(collection_name: str) -> Any:
    return get_db_connection()[collection_name]
