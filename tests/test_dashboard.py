"""batch_monitor.py report --html: a self-contained page holding the figures of the history, valid HTML,
and, in a real headless browser, rendered without a script error (its screenshot kept as an artefact)."""

import html
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import html5lib
import pytest

from amend_store import RUN_HISTORY_COLLECTION, TASKS_COLLECTION
from embedded.data_file import save_database
from fixture_generator import generate_history
from history.records import parse_run
from ops.dashboard import MAX_BARS, render, report_context
from tests.support import NO_BACKLOG, PROJECT_ROOT, TASK_006, Clock, history_of, load, one_line
from utils.config import Thresholds

NOW = datetime(2026, 11, 26, 12, 0)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = Path(os.environ.get("DRS_TEST_ARTEFACTS", PROJECT_ROOT / "tests" / "artefacts"))


def run(hours_ago, duration, moved, tasks, run_id):
    started = NOW - timedelta(hours=hours_ago)
    outcomes = [task["outcome"] for task in tasks]
    return {"run_id": run_id, "host": "cron-1", "started_dtm": started,
            "ended_dtm": started + timedelta(seconds=duration), "duration_seconds": duration,
            "exit_code": 1 if "error" in outcomes else 0, "completed": outcomes.count("completed"),
            "errored": outcomes.count("error"), "deferred": outcomes.count("deferred"), "cases_moved": moved,
            "batch_cases": 20_000 * outcomes.count("completed"),
            "tasks": [dict(task, cases_moved=moved if index == 0 else 0,
                           batch_cases=20_000 if task["outcome"] == "completed" else 0)
                      for index, task in enumerate(tasks)]}


def task(task_id, outcome, message, batch="005"):
    return {"_id": task_id, "Task_Id": task_id, "batch": batch, "outcome": outcome, "message": message}


KNOWN_HISTORY = [
    run(30, 3.5, 12, [task(1, "completed", "Amended batch 005 seq 2: 12 case(s) reassigned")], "a" * 32),
    run(20, 1.25, 0, [task(2, "error", "ResourceBalanceError: donor DRC 'D4' holds 3 'CW' case(s)"),
                      task(3, "error", "ResourceBalanceError: donor DRC 'D7' holds 5 'AD' case(s)"),
                      task(4, "deferred", "batch 006 is being amended by amend task 9")], "b" * 32),
    run(2, 2.0, 7, [task(5, "completed", "Amended batch 006 seq 3: 7 case(s) reassigned <script>alert(1)</script>")],
        "c" * 32),
]
STUCK = [{"_id": "6740a0000000000000000777", "Task_Id": 777, "parameters": {"Case_Distribution_Batch_ID": "008"},
          "status_changed_dtm": NOW - timedelta(hours=5), "claimed_by": {"host": "old-host"}}]


def page_of(history, stuck=()):
    thresholds = Thresholds()
    newest_first = sorted(history, key=lambda r: r["started_dtm"], reverse=True)
    window = [r for r in newest_first if r["started_dtm"] >= NOW - timedelta(hours=thresholds.window_hours)]
    success = next((r for r in newest_first if r["exit_code"] == 0), None)
    return render(report_context(history_of(history), history_of(window), success and parse_run(success), list(stuck),
                                 NO_BACKLOG, NOW, NOW - timedelta(days=28), NOW, thresholds))


def test_the_page_is_valid_html_holding_the_figures_of_a_known_history():
    page = page_of(KNOWN_HISTORY, STUCK)
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)  # raises at any parse error
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))
    assert "DRS Amend: CRITICAL" in text  # a stuck task
    assert "<header class=\"critical\">" in page
    assert "3 runs 2 tasks completed 2 errored 1 deferred 19 cases moved failure rate 50%" in text
    assert "failure rate 67% over 24 h (2 of 3 task(s))" in text  # the window: the last 24 hours
    assert "last successful run 2.0 h ago" in text and "1 stuck task(s)" in text
    # failure patterns, grouped, with the count and the latest example
    assert "2 ResourceBalanceError: donor DRC '…' holds <n> '…' case(s)" in text
    assert "ResourceBalanceError: donor DRC 'D7' holds 5 'AD' case(s)" in text
    # the stuck task and the latest runs with their tasks, newest first
    assert "777 6740a0000000000000000777 008" in text and "old-host" in text
    latest = text[text.index("Latest runs"):]
    assert latest.index("cccccccccccc") < latest.index("bbbbbbbbbbbb") < latest.index("aaaaaaaaaaaa")
    assert "batch 006 is being amended by amend task 9" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page


def test_the_charts_of_a_known_history_draw_a_bar_per_run_and_series_with_its_numbers_on_hover():
    columns = chart_columns(page_of(KNOWN_HISTORY, STUCK))
    assert list(columns) == ["Working time of each run", "Cases moved by each run", "Tasks of each run, by outcome"]
    assert all(len(chart) == 3 for chart in columns.values())
    tip = ("2026-11-25 06:00, run aaaaaaaaaaaa: working 3.50 s, 12 case(s) moved, 1 completed, 0 errored, "
           "0 deferred")
    assert [bars for chart in columns.values() for column_tip, bars in chart if column_tip == tip] == [
        ["duration"], ["moved"], ["completed"]]
    assert [bars for chart in columns.values() for column_tip, bars in chart
            if column_tip.startswith("2026-11-25 16:00")] == [["duration"], [], ["errored", "deferred"]]  # no bar of 0


def test_the_page_fetches_nothing():
    page = page_of(KNOWN_HISTORY)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert re.findall(r"<script[^>]*>", page) == ["<script>"]  # one script, inline


def chart_columns(page):
    """{chart title: [(a column's tip, the css classes of its bars)]} of a page."""
    charts = re.findall(r'<figcaption>([^<]*)(.*?)</figure>', page, re.DOTALL)
    return {html.unescape(title.strip()): [
        (html.unescape(tip), re.findall(r'<rect class="(?!hit|cut)(\w+)"', bars))
        for tip, bars in re.findall(r'<g class="column(?: partial)?" data-tip="([^"]*)">(.*?)</g>', body, re.DOTALL)]
        for title, body in charts}


def test_beyond_its_limit_of_bars_the_page_draws_one_bar_per_day():
    history = generate_history(MAX_BARS * 4, NOW, every=timedelta(hours=1))
    page = page_of(history)
    columns = chart_columns(page)
    assert list(columns) == ["Median working time per day", "Cases moved per day", "Tasks per day, by outcome"]
    days = [re.fullmatch(r"(\d{4}-\d\d-\d\d)( \(only part of it in the period\))?: (?:(\d+) run.*|no run)", tip)
            for tip, _ in columns["Median working time per day"]]
    assert len(days) == 29  # every day of the period, from 2026-10-29 (12:00) to 2026-11-26 (12:00)
    assert [bool(day[2]) for day in days] == [True] + [False] * 27 + [True]
    assert {day[1] for day in days if day[3]} == {f"{r['started_dtm']:%Y-%m-%d}" for r in history}
    assert sum(int(day[3] or 0) for day in days) == len(history)
    assert "each run" not in page


def test_an_empty_history_is_a_page_too():
    page = page_of([])
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
    assert "no successful run recorded" in page and "<p>No run in the period.</p>" in page
    assert "<svg" not in page and "<figure" not in page and "Latest runs" not in page


# --- the command -----------------------------------------------------------------------------

@pytest.fixture
def history_file(tmp_path, script):
    """The fixtures, a generated history of 300 runs ending an hour before NOW, and a run of main.py on them
    half an hour before NOW (the report's clock)."""
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", "--generate-history", "300", env=env,
                  clock=Clock(NOW - timedelta(hours=1))).returncode == 0
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env,
                  clock=Clock(NOW - timedelta(minutes=30))).returncode == 0
    return tmp_path, env


def test_the_report_command_writes_the_page_and_nothing_else(history_file, script):
    tmp_path, env = history_file
    before = (tmp_path / "db.bson").read_bytes()
    result = script("batch_monitor.py", "report", "--html", str(tmp_path / "dashboard.html"), env=env,
                    clock=Clock(NOW))
    assert result.returncode == 0 and result.stdout == f"batch_monitor: wrote {tmp_path / 'dashboard.html'}\n"
    page = (tmp_path / "dashboard.html").read_text()
    assert "301</b> runs" in page  # the generated history and the fixture run
    assert (tmp_path / "db.bson").read_bytes() == before
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []

    week_ago = NOW - timedelta(days=7)
    week = script("batch_monitor.py", "report", "--html", str(tmp_path / "week.html"), "--since",
                  f"{week_ago:%Y-%m-%dT%H:%M}", env=env, clock=Clock(NOW))
    in_the_week = load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].count_documents(
        {"started_dtm": {"$gte": week_ago}})
    assert week.returncode == 0 and re.search(r"<b>(\d+)</b> runs", (tmp_path / "week.html").read_text())[1] == \
        str(in_the_week) and 80 < in_the_week < 90
    backwards = script("batch_monitor.py", "report", "--html", str(tmp_path / "x.html"), "--since", "2026-11-20",
                       "--until", "2026-11-10", env=env)
    assert backwards.returncode == 2 and "--since (2026-11-20T00:00:00+00:00) must come before --until" in one_line(
        backwards.stderr)
    unwritable = script("batch_monitor.py", "report", "--html", str(tmp_path / "missing" / "x.html"), env=env)
    assert unwritable.returncode == 2 and "cannot write" in one_line(unwritable.stderr)


# --- in a real browser -----------------------------------------------------------------------

def open_in_browser(page: Path, profile: Path, screenshot: Path | None = None,
                    height: int = 2600) -> tuple[str, list[str]]:
    """Chromium, headless, opens the page in a window 1280 pixels wide and `height` high: (the document as its
    script left it, the console's errors); its screenshot, if asked for, of the window."""
    assert CHROMIUM is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size=1280,{height}", "--enable-logging=stderr", "--v=0"]
    if screenshot is not None:
        subprocess.run([CHROMIUM, *flags, f"--screenshot={screenshot}", page.as_uri()], capture_output=True,
                       timeout=120, check=True)
    result = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                            timeout=120, check=True)
    errors = [line for line in result.stderr.splitlines() if ":CONSOLE" in line and "Uncaught" in line]
    return result.stdout, errors


needs_a_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install "
                                                               "chromium; .ci/run installs it)")


@pytest.mark.browser
@pytest.mark.slow
@needs_a_browser
def test_a_broken_script_would_be_seen(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html lang="en"><head><title>x</title></head><body data-ready="no">'
                    '<script>undefinedFunction(); document.body.setAttribute("data-ready", "yes");</script>'
                    '</body></html>')
    dom, errors = open_in_browser(page, tmp_path / "profile")
    assert 'data-ready="no"' in dom and len(errors) == 1 and "undefinedFunction is not defined" in errors[0]


@pytest.mark.browser
@pytest.mark.slow
@needs_a_browser
def test_the_dashboard_renders_in_a_real_browser_without_script_errors(history_file, script):
    tmp_path, env = history_file
    db = load(tmp_path / "db.bson")  # a stuck task, to show that table too
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$set": {
        "task_status": "processing", "claimed_by": {"run_id": "gone", "host": "old-host", "pid": 1},
        "claim_expires_dtm": NOW - timedelta(hours=1)}})
    save_database(db, tmp_path / "db.bson")
    assert load(tmp_path / "db.bson")[RUN_HISTORY_COLLECTION].count_documents({}) == 301
    page = tmp_path / "dashboard.html"
    assert script("batch_monitor.py", "report", "--html", str(page), env=env, clock=Clock(NOW)).returncode == 0
    assert "<h1>DRS Amend: WARNING</h1>" in page.read_text()  # as docs/monitoring.md captions the screenshot

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTEFACTS / "dashboard.png"
    dom, errors = open_in_browser(page, tmp_path / "profile", screenshot)
    assert errors == []
    assert 'data-ready="yes"' in dom  # the script ran to its end
    bars = int(re.search(r'data-bars="(\d+)"', dom)[1])
    assert bars == page.read_text().count("data-tip=") == 3 * 29  # a column per day of the period in each chart
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000


def test_values_from_the_database_show_on_one_line_in_the_page_too():
    hostile = "cron-1\n\x1b[31mforged\u2028\x85\x07"
    history = [dict(run(2, 1.0, 0, [task(9, "error", f"failed: {hostile}", batch=hostile)], "d" * 32), host=hostile)]
    page = page_of(history)
    assert not any(character in page for character in "\x1b\u2028\x85\x07")
    assert "cron-1\\n\\x1b[31mforged\\u2028\\x85\\x07" in page
