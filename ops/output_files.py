"""The files a read-only command writes (`batch_monitor.py report --html FILE`, `logs --out FILE`).

An empty name is refused as the option is read (file_name). A destination is resolved (symlinks,
`..`) and refused when it is the embedded data file or one of the files the job keeps beside it
under its name (`PATH.lock`, the `PATH.*.tmp` of a save), by path or by identity (a hard link); when
it is not a regular file (a folder, a device, a FIFO, a socket); and when it exists, is not empty
and is not, as a whole, this tool's own earlier output (is_own_output). So a mistyped name never
replaces the database, its lock, a configuration or anyone's document; a file replaced keeps its
permissions.
"""

import csv
import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path

from ops.monitoring import ACTION_COLUMNS, GROUP_COLUMNS, LOG_COLUMNS
from utils.cli import named_path
from utils.Custom_Exceptions import ConfigurationError

# In the dashboard's head (html_report.write_page puts it there): a later report may replace a page carrying it.
DASHBOARD_MARKER = '<meta name="generator" content="DRS Amend batch_monitor">'
# Where the dashboard's marker is looked for: its head.
HEAD_BYTES = 64 * 1024
# Readable by a web server or a mail job, as the page always was.
OUTPUT_MODE = 0o644
# The columns of each export of `logs`: its rows, its failure patterns, the operator actions.
EXPORTS = (LOG_COLUMNS, GROUP_COLUMNS, ACTION_COLUMNS)


def is_own_output(text: str) -> bool:
    """Whether `text` (a whole file) is this tool's output: the dashboard (its marker in the head), or an
    export of `logs` (rows, failure patterns or operator actions) as a whole (csv: every row of its columns;
    txt: its header line, then lines of the table; json: a list of objects with exactly its keys). An empty json export
    (`[]`) cannot be told from another file holding `[]`; it is taken as the tool's."""
    if DASHBOARD_MARKER in text[:HEAD_BYTES]:
        return True
    header_line = text.partition("\n")[0].rstrip("\r")
    for columns in EXPORTS:
        if header_line == ",".join(columns):
            return all(len(row) == len(columns) for row in csv.reader(io.StringIO(text)))
        if header_line.split() == list(columns):
            # text_table pads each column: every row has a space just before each column's start
            starts = [match.start() for match in re.finditer(r"\S+", header_line)][1:]
            return all(len(line) <= start or line[start - 1] == " "
                       for line in text.splitlines()[1:] for start in starts)
    try:
        rows = json.loads(text)
    except ValueError:
        return False
    return isinstance(rows, list) and all(
        isinstance(row, dict) and set(row) in [set(columns) for columns in EXPORTS] for row in rows)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _status(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _same_folder(one: Path, other: Path) -> bool:
    if one == other:
        return True
    one_status, other_status = _status(one), _status(other)
    return one_status is not None and other_status is not None and _identity(one_status) == _identity(other_status)


def _refuse_a_file_of_the_database(shown: str, target: Path, status: os.stat_result | None,
                                   database_file: Path) -> None:
    """A ConfigurationError when `target` is the embedded data file or a file the job keeps beside it."""
    reserved = database_file.name + "."
    folder = database_file.parent
    database_status = _status(database_file)
    if target == database_file or (status is not None and database_status is not None
                                   and _identity(status) == _identity(database_status)):
        raise ConfigurationError(f"{shown} is the embedded database file {database_file}; give another name")
    if target.name.startswith(reserved) and _same_folder(target.parent, folder):
        raise ConfigurationError(f"{shown}: the names {reserved}* beside the embedded database file are the job's "
                                 f"(its lock, the temporary files of a save); give another name")
    if status is None or not folder.is_dir():
        return
    for kept in folder.iterdir():
        kept_status = _status(kept) if kept.name.startswith(reserved) else None
        if kept_status is not None and _identity(kept_status) == _identity(status):
            raise ConfigurationError(f"{shown} is a hard link to {kept}, a file the embedded database keeps (its "
                                     f"lock, or a temporary file of a save); give another name")


def refuse_a_file_of_the_database(shown: str, target: Path, database_file: Path) -> None:
    """A ConfigurationError when `target` is the embedded data file, a file the job keeps beside it (which a
    run may remove), or a hard link to one of them."""
    _refuse_a_file_of_the_database(shown, Path(os.path.realpath(target)), _status(target),
                                   Path(os.path.realpath(database_file)))


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


# An argparse type: the name of a file to write (an empty one is refused).
file_name = named_path("a file to write")


def output_destination(option: str, destination: Path, database_file: Path | None) -> Path:
    """The file to write for `option destination` (symlinks followed: a link stays a link), or a
    ConfigurationError saying why it may not be written and what to do. `database_file`: the embedded
    data file of the configuration (None for a server)."""
    shown = f"{option} {destination}"
    target = Path(os.path.realpath(destination))
    status = _status(target)
    if database_file is not None:
        _refuse_a_file_of_the_database(shown, target, status, Path(os.path.realpath(database_file)))
    if status is None:
        return target
    if stat.S_ISDIR(status.st_mode):
        raise ConfigurationError(f"{shown} is a folder; give the name of a file to write")
    if not stat.S_ISREG(status.st_mode):
        raise ConfigurationError(f"{shown} is not a regular file (a device, FIFO or socket); give the name of a "
                                 f"file to write")
    if status.st_size and not is_own_output(_text(target)):
        raise ConfigurationError(f"{shown} exists and is not an earlier output of batch_monitor (a dashboard or a "
                                 f"logs export); remove it or give another name")
    return target


def write_atomically(target: Path, text: str) -> None:
    """Replace `target` with `text` through a temporary file in its folder and a rename: a reader (a web
    server, a mail job) never sees half of it, and a failure leaves the previous file."""
    existing = _status(target)
    # A file replaced keeps its permissions (a report kept private stays private); a new one is readable.
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else OUTPUT_MODE
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
        os.chmod(handle.name, mode)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
