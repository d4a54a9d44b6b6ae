"""One line stays one line: text from the database (batch ids, Task_Ids, DRC ids, RTOM codes, host
names, the messages built from them) cannot end a line of a log, of stderr or of an export, nor
forge the next one, nor disguise it.

one_line escapes, as Python writes them in a string literal, every character that ends or disguises
a line: the C0 controls (tab included: `\\t`, `\\n`, `\\r`, else `\\x1b` and the like), DEL and the
C1 controls (`\\x85` among them), the line and paragraph separators U+2028 and U+2029, the
bidirectional controls (which reorder what a terminal shows) and lone surrogates (which no log file
can encode), and the backslash itself, written `\\\\`. So every backslash of the result starts an
escape, the result is unambiguous (decoding it as a Python string literal gives the text back) and
has no line boundary of str.splitlines(). Other characters, Sinhala and Tamil included, stay as they
are; text without any of them (the code's own messages) is returned unchanged.

OneLineFilter applies it to every log record's message (msg % args). A traceback keeps its lines
(the code's own text), but the message of each exception in it (and its notes) is escaped: the last
line of a traceback repeats the message, which may hold the same database values.
"""

import logging
import re
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

# Besides the backslash and the C0 controls (which json.dumps escapes itself):
_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ud800-\udfff"
_SPECIAL = re.compile(f"[\\\\\x00-\x1f{_BEYOND_C0}]")
_JSON_UNSAFE = re.compile(f"[{_BEYOND_C0}]")
_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    code = ord(character)
    return _NAMED.get(character) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def one_line(text: object) -> str:
    """str(text) with every character that could end or disguise a line, and the backslash, escaped."""
    text = str(text)
    return _SPECIAL.sub(_escape, text) if _SPECIAL.search(text) else text


def json_one_line(dumped: str) -> str:
    """JSON text from json.dumps(ensure_ascii=False), whose strings keep the characters above (DEL, C1,
    separators, bidirectional controls, surrogates) as they are, with those written as \\uXXXX escapes:
    the same JSON value, with no line boundary inside a string."""
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", dumped)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def format_exception(exc_info: ExcInfo, message: Callable[[str], str] = one_line) -> str:
    """The traceback as logging.Formatter.formatException writes it, with the message and the notes of
    every exception in it (causes, contexts and members of a group included) passed through `message`."""
    formatted = traceback.TracebackException(*exc_info, compact=True)
    pending, seen = [formatted], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        text = getattr(current, "_str", None)  # the message format_exception_only writes
        if not isinstance(text, str):  # a Python that keeps it elsewhere: the whole traceback on one line
            return message("".join(traceback.format_exception(*exc_info)).rstrip("\n"))
        current._str = message(text)  # type: ignore[attr-defined]
        notes = getattr(current, "__notes__", None)
        if notes is not None:
            current.__notes__ = ([message(str(note)) for note in notes] if isinstance(notes, (list, tuple))
                                 else [message(repr(notes))])
        related = (current.__cause__, current.__context__, *(getattr(current, "exceptions", None) or ()))
        pending += [item for item in related if item is not None]
    return "".join(formatted.format()).rstrip("\n")


class OneLineFilter(logging.Filter):
    """Escapes each record's message with one_line, and the exception messages of its traceback, once
    (a record goes through every handler with the same filters). `clean` is applied first (scrub: a
    secret is recognized as it was written, before any escape)."""

    DONE = "_one_line_done"

    def __init__(self, clean: Callable[[str], str] = str) -> None:
        super().__init__()
        self.clean = clean

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self.DONE, False):
            return True
        record.msg = one_line(self.clean(record.getMessage()))
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            exc_info: Any = record.exc_info
            record.exc_text = self.clean(format_exception(exc_info, lambda text: one_line(self.clean(text))))
        setattr(record, self.DONE, True)
        return True
