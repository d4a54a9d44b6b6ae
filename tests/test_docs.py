"""The README is tested, as sqlite-utils' tests/test_docs.py tests its docs: every option of every script
is in its table and every option the README names exists; the exit-code tables are the scripts' own; the
layout names every module and none that is gone; the test command is the one .ci/run runs."""

import argparse
import re
from pathlib import Path

import pytest

import batch_monitor
import database_update
import main
from benchmarks import run_benchmarks
from tests.support import PROJECT_ROOT
from utils.cli import stopped_codes

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")
# Options the README names that belong to other programs: pytest's (the test command) and pip's.
OTHER_PROGRAMS_OPTIONS = {"--cov"}


def sections(text: str) -> dict[str, str]:
    """{heading: its text up to the next heading of any level}; lines in fenced code are never headings."""
    found: dict[str, list[str]] = {}
    current, fenced = "", False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            current = line.lstrip("#").strip()
            found[current] = []
            continue
        found.setdefault(current, []).append(line)
    return {heading: "\n".join(lines) for heading, lines in found.items()}


SECTIONS = sections(README)


def tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of a text, each a list of rows (its header first), each a list of cells."""
    found: list[list[list[str]]] = []
    previous_was_row = False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not previous_was_row:
                found.append([])
            found[-1].append(cells)
        previous_was_row = is_row
    return found


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    """The long options a parser accepts, --help and hidden ones aside."""
    return {option for action in parser._actions if action.help != argparse.SUPPRESS
            for option in action.option_strings if option.startswith("--") and option != "--help"}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(action.choices)


def first_column_options(table: list[list[str]]) -> set[str]:
    return {option for row in table[1:] for option in OPTION.findall(row[0])}


def test_every_option_of_main_is_in_its_table_and_no_other():
    (table,) = tables(SECTIONS["Options of `main.py`"])
    assert first_column_options(table) == options_of(main.build_parser())


def test_every_option_of_database_update_is_in_its_table_and_no_other():
    (table,) = tables(SECTIONS["Resetting a database: `database_update.py`"])
    assert first_column_options(table) == options_of(database_update.build_parser())


def test_every_command_of_batch_monitor_is_in_its_table_with_exactly_its_options():
    table = tables(SECTIONS["Monitoring: `batch_monitor.py`"])[0]
    documented = {row[0].strip("`").split()[0]: set(OPTION.findall(row[0])) for row in table[1:]}
    parser = batch_monitor.build_parser()
    expected = {name: options_of(command) for name, command in subcommands(parser).items()}
    expected |= {option: {option} for option in options_of(parser)}  # given before or after the command
    assert documented == expected


def test_every_option_of_the_benchmark_is_in_its_table_and_no_other():
    (table,) = tables(SECTIONS["Benchmark"])[:1]
    assert first_column_options(table) == options_of(run_benchmarks.build_parser())


def test_every_option_the_readme_names_exists():
    parsers = [main.build_parser(), database_update.build_parser(), batch_monitor.build_parser(),
               run_benchmarks.build_parser(), *subcommands(batch_monitor.build_parser()).values()]
    existing = set().union(*map(options_of, parsers)) | {"--help"}
    assert set(OPTION.findall(README)) - existing == OTHER_PROGRAMS_OPTIONS


def codes_in(cell: str) -> set[int]:
    return {int(code) for code in re.findall(r"\d+", cell)}


def exit_code_tables() -> dict[str, list[list[str]]]:
    """The tables of the section Exit codes, by the script named in the paragraph before each."""
    text = SECTIONS["Exit codes"]
    found = {}
    for script, body in re.findall(r"^`(\w+\.py)`[^\n]*\n(.*?)(?=^`\w+\.py`|\Z)", text, re.S | re.M):
        (table,) = tables(body)
        found[script] = table
    return found


def test_the_exit_code_tables_are_the_codes_of_each_script():
    documented = exit_code_tables()
    assert set(documented) == {"main.py", "database_update.py", "batch_monitor.py"}
    for script, module in (("main.py", main), ("database_update.py", database_update)):
        codes = set().union(*(codes_in(row[0]) for row in documented[script][1:]))
        assert codes == set(module.EXIT_CODES), script
    header, *rows = documented["batch_monitor.py"]
    for column, command in enumerate(header[1:], start=1):
        codes = set().union(*(codes_in(row[0]) for row in rows if row[column] not in ("", "—")))
        assert codes == set(batch_monitor.EXIT_CODES[command.strip("`")]) | set(stopped_codes("")), command


def test_each_script_lists_its_exit_codes_in_its_help():
    for module in (main, database_update):
        assert set(map(int, re.findall(r"^  (\d+) ", module.build_parser().format_help(), re.M))) == \
            set(module.EXIT_CODES)
    assert re.findall(r"^  (\w+) +\d", batch_monitor.build_parser().format_help(), re.M) == list(
        batch_monitor.EXIT_CODES)


def project_modules() -> set[Path]:
    """Every Python module of the project but the tests: the scripts, the role modules, utils/, benchmarks/,
    tools/."""
    return {path.relative_to(PROJECT_ROOT) for folder in (PROJECT_ROOT, PROJECT_ROOT / "utils",
                                                          PROJECT_ROOT / "benchmarks", PROJECT_ROOT / "tools")
            for path in folder.glob("*.py") if path.name != "__init__.py"}


def layout_entries() -> dict[Path, str]:
    """{path the layout names: its row's text}, a bare file name in a folder's row taken as that folder's."""
    (table,) = tables(SECTIONS["Layout"])
    named: dict[Path, str] = {}
    for place, meaning in table[1:]:
        folders = [Path(name) for name in re.findall(r"`([\w./]+)/`", place)]
        for name in re.findall(r"`([\w./-]+)`", place):
            named[Path(name.rstrip("/"))] = meaning
        for name in re.findall(r"`([\w/]+\.py)`", meaning):
            named[folders[0] / name if len(folders) == 1 and "/" not in name else Path(name)] = meaning
    return named


def test_the_layout_names_every_module_and_no_module_that_is_gone():
    named = layout_entries()
    assert project_modules() - set(named) == set(), "modules missing from the layout table"
    gone = {path for path in named if not (PROJECT_ROOT / path).exists()}
    assert gone == set(), "the layout names what does not exist"


def test_the_layout_names_every_folder_of_the_project():
    folders = {Path(path.name) for path in PROJECT_ROOT.iterdir() if path.is_dir() and not path.name.startswith(".")
               and path.name not in ("var", "logs", "__pycache__", "htmlcov")}
    assert folders - {Path(path.parts[0]) for path in layout_entries()} == set()


@pytest.mark.parametrize("name", sorted(set(re.findall(r"[\w/]+\.py\b", README))))
def test_every_module_the_readme_names_exists(name):
    candidates = [path for path in PROJECT_ROOT.rglob(Path(name).name) if ".venv" not in path.parts
                  and str(path.relative_to(PROJECT_ROOT)).endswith(name)]
    assert candidates, f"the README names {name}, which does not exist"


def fenced_commands(heading: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", SECTIONS[heading], re.S)


def test_the_readme_test_command_is_what_ci_runs():
    install_and_run, tests = fenced_commands("The two commands")
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == tests
    assert "faketime -f '+400d'" in tests and "DRS_MONGOMOCK_SPEEDUPS=0" in tests and "--cov" in tests
    assert install_and_run.endswith(".venv/bin/python database_update.py && .venv/bin/python main.py")


def test_the_documentation_helpers_find_what_they_claim():
    """The parsers above, on a text whose answer is known (a docs test that found nothing would pass)."""
    text = "# A\n```sh\n# not a heading\n```\n| x | y |\n|---|---|\n| `--a-b N` | c \\| d |\n\n## B\ntext\n"
    assert list(sections(text)) == ["A", "B"] and "# not a heading" in sections(text)["A"]
    assert tables(sections(text)["A"]) == [[["x", "y"], ["`--a-b N`", "c \\| d"]]]
    assert first_column_options(tables(text)[0]) == {"--a-b"}
    assert len(project_modules()) > 25 and len(layout_entries()) > 30
    assert set(exit_code_tables()) == {"main.py", "database_update.py", "batch_monitor.py"}
