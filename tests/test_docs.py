"""The README and docs/ are tested, as sqlite-utils' tests/test_docs.py tests its docs: every option of every
script is in its table and every option they name exists; the exit-code tables are the scripts' own; the
layout names every module and none that is gone; the test command is the one .ci/run runs; the README stays an
operator's manual of at most 300 lines, and every link of it and of docs/ leads to a file that exists."""

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

README_PATH = PROJECT_ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
README_MAX_LINES = 300
# The design and reference material the README moved out: {file name: text}.
DOC_PATHS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
DOCS = {path.name: path.read_text(encoding="utf-8") for path in DOC_PATHS}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")
# Options the README names that belong to other programs: pytest's (the test command) and systemctl's.
OTHER_PROGRAMS_OPTIONS = {"--cov", "--now"}


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
DOC_SECTIONS = {name: sections(text) for name, text in DOCS.items()}


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


@pytest.mark.parametrize("section", [SECTIONS["Monitoring: `batch_monitor.py`"],  # the summary
                                     DOC_SECTIONS["monitoring.md"]["Commands"]],  # the full reference
                         ids=["README", "docs/monitoring.md"])
def test_every_command_of_batch_monitor_is_in_its_table_with_exactly_its_options(section):
    table = tables(section)[0]
    documented = {row[0].strip("`").split()[0]: set(OPTION.findall(row[0])) for row in table[1:]}
    parser = batch_monitor.build_parser()
    expected = {name: options_of(command) for name, command in subcommands(parser).items()}
    expected |= {option: {option} for option in options_of(parser)}  # given before or after the command
    assert documented == expected


def test_every_option_of_the_benchmark_is_in_its_table_and_no_other():
    (table,) = tables(DOC_SECTIONS["scale.md"]["Benchmark"])[:1]
    assert first_column_options(table) == options_of(run_benchmarks.build_parser())


def existing_options() -> set[str]:
    parsers = [main.build_parser(), database_update.build_parser(), batch_monitor.build_parser(),
               run_benchmarks.build_parser(), *subcommands(batch_monitor.build_parser()).values()]
    return set().union(*map(options_of, parsers)) | {"--help"}


@pytest.mark.parametrize("name", ["README.md", *(f"docs/{name}" for name in DOCS)])
def test_every_option_the_readme_and_the_docs_name_exists(name):
    text = (PROJECT_ROOT / name).read_text(encoding="utf-8")
    assert set(OPTION.findall(text)) - existing_options() <= OTHER_PROGRAMS_OPTIONS


def test_every_option_of_other_programs_is_named_somewhere():
    """OTHER_PROGRAMS_OPTIONS holds no option that the README and the docs have stopped naming."""
    named = set().union(*(OPTION.findall(text) for text in (README, *DOCS.values())))
    assert named - existing_options() == OTHER_PROGRAMS_OPTIONS


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


@pytest.mark.parametrize("name", sorted(set().union(*(re.findall(r"[\w/]+\.py\b", text)
                                                      for text in (README, *DOCS.values())))))
def test_every_module_the_readme_and_the_docs_name_exists(name):
    candidates = [path for path in PROJECT_ROOT.rglob(Path(name).name) if ".venv" not in path.parts
                  and str(path.relative_to(PROJECT_ROOT)).endswith(name)]
    assert candidates, f"the README or docs/ names {name}, which does not exist"


def test_the_readme_is_an_operators_manual_of_at_most_300_lines():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move design or reference material to docs/"


def local_links(text: str) -> list[str]:
    """The targets of a Markdown text's links and images that are files of the project (no URL, no anchor)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [target.split("#")[0] for target in targets
            if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


@pytest.mark.parametrize("path", [README_PATH, *DOC_PATHS], ids=lambda path: path.name)
def test_every_link_leads_to_a_file_that_exists(path):
    missing = [target for target in local_links(path.read_text(encoding="utf-8"))
               if not (path.parent / target).exists()]
    assert missing == [], f"{path.name} links to files that do not exist"


def test_the_readme_links_every_file_of_docs():
    linked = {(PROJECT_ROOT / target).resolve() for target in local_links(README)}
    assert {path.resolve() for path in DOC_PATHS} - linked == set(), "a file of docs/ the README does not lead to"


def fenced_commands(heading: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", SECTIONS[heading], re.S)


def test_the_readme_test_command_is_what_ci_runs():
    install_and_run, tests = fenced_commands("The two commands")
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == tests
    assert "faketime -f '+400d'" in tests and "DRS_MONGOMOCK_SPEEDUPS=0" in tests and "--cov" in tests
    assert "DRS_TEST_BATCH_READ=push-down" in tests
    assert install_and_run.endswith(".venv/bin/python database_update.py && .venv/bin/python main.py")


def test_the_documentation_helpers_find_what_they_claim():
    """The parsers above, on a text whose answer is known (a docs test that found nothing would pass)."""
    text = "# A\n```sh\n# not a heading\n```\n| x | y |\n|---|---|\n| `--a-b N` | c \\| d |\n\n## B\ntext\n"
    assert list(sections(text)) == ["A", "B"] and "# not a heading" in sections(text)["A"]
    assert tables(sections(text)["A"]) == [[["x", "y"], ["`--a-b N`", "c \\| d"]]]
    assert first_column_options(tables(text)[0]) == {"--a-b"}
    assert len(project_modules()) > 25 and len(layout_entries()) > 30
    assert set(exit_code_tables()) == {"main.py", "database_update.py", "batch_monitor.py"}
    assert local_links("[a](docs/a.md) ![b](b.png#x) [c](https://example.org) [d](#e)") == ["docs/a.md", "b.png"]
    assert {"design.md", "monitoring.md", "scale.md"} <= set(DOCS) and len(DOC_SECTIONS["scale.md"]) > 3
