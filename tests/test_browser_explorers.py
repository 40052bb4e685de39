"""The browser-native explorers in a real browser: JupyterLab, and the static edition.

In JupyterLab: a small notebook shows ``ReceptiveFieldExplorer``; the test clicks and drags
the query on the map and checks the highlighted cells and the counts against
``dilated_window``, checks that the click reached the kernel (``explorer.row``,
``explorer.col``) and that ``explorer.dilation = 3`` set in Python moves the picture.
It times 20 clicks from the input event to the redrawn picture (and to the next frame)
and writes the numbers to ``test-artifacts/explorer-timing.json``.

The coverage explorer of lesson 02 (``CoverageExplorer``) gets the same: clicks and a drag,
every map's window cells, per-query counts and map totals against ``dilated_window``,
``window_coverage`` and ``padding_counts``, a schedule set from Python, a schedule typed
in the widget (and a refused one, whose message shows in the widget), the same timing; and
in the static edition built from lesson 02 itself.

Skipped, like tests/test_browser.py, where Chromium or Playwright is missing;
``DILATE_LAB_REQUIRE_BROWSER=1`` turns the skip into a failure.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path

import nbformat

from jupyterlab_browser import (
    check_coverage_shown,
    check_window_shown,
    chromium_page,
    click_and_drag_receptive_field,
    click_drag_and_time,
    jupyterlab_server,
    open_notebook,
    run_all_cells,
)
from test_browser import ARTIFACTS, _browser_or_skip

MEDIAN_TARGET_MS = 50.0
NOTEBOOK = "explorer.ipynb"
CELLS = [
    "from dilate_lab.course.explorers import ReceptiveFieldExplorer\n"
    "explorer = ReceptiveFieldExplorer(kernel_size=3, dilation=2, size=9, row=1, col=2)\n"
    "explorer",
    "print('query', explorer.row, explorer.col)",
    "# the test types explorer.dilation = 3 here",
]


COVERAGE_NOTEBOOK = "coverage.ipynb"
COVERAGE_CELLS = [
    "from dilate_lab.course.explorers import CoverageExplorer\n"
    "explorer = CoverageExplorer(kernel_size=3, size=8, dilations=[1, 2, 3], row=0, col=0)\n"
    "explorer",
    "print('query', explorer.row, explorer.col, 'dilations', explorer.dilations)",
    "# the test types explorer.dilations = [1, 4] here",
]
ROOT = Path(__file__).resolve().parents[1]


def _write_notebook(folder: Path, cells=CELLS, name: str = NOTEBOOK) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / name)


def _record_timing(name: str, timing: dict) -> None:
    saved = ARTIFACTS / "explorer-timing.json"
    record = json.loads(saved.read_text()) if saved.exists() else {}
    saved.write_text(json.dumps({**record, name: timing}, indent=1))


def _wait_for(condition, message: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def _run_cell(page, index: int, expected: str, source: str | None = None) -> None:
    """Run code cell ``index`` again (typing ``source`` into it first, if given); wait for ``expected``."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    if source is not None:
        page.keyboard.press("Control+A")
        page.keyboard.type(source)
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output")
    deadline = time.monotonic() + 30
    while expected not in " ".join(output.all_text_contents()):
        assert time.monotonic() < deadline, f"cell {index} did not print {expected!r}: {output.all_text_contents()}"
        time.sleep(0.2)


def test_receptive_field_explorer_click_and_drag_in_jupyterlab(tmp_path):
    chromium = _browser_or_skip()
    course = tmp_path / "course"
    _write_notebook(course)
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyterlab_server(course, tmp_path / "jupyter") as url, chromium_page(chromium) as page:
        open_notebook(page, url, NOTEBOOK)
        prompts = run_all_cells(page)
        assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), prompts
        explorer = page.locator(".dl-explorer.dl-receptive-field").first
        explorer.wait_for(timeout=60_000)
        check_window_shown(explorer, 1, 2, kernel_size=3, dilation=2, size=9)

        timing = click_and_drag_receptive_field(page, explorer, kernel_size=3, dilation=2, size=9)
        explorer.screenshot(path=str(ARTIFACTS / "explorer-jupyterlab.png"))
        last_row, last_col = (7 * 19) % 9, (5 * 19 + 3) % 9
        _run_cell(page, 1, f"query {last_row} {last_col}")  # the clicks reached the kernel's traitlets

        _run_cell(page, 2, "dilation 3", "explorer.dilation = 3; print('dilation', explorer.dilation)")
        deadline = time.monotonic() + 10
        while explorer.locator('svg.dl-map[data-panel="r3"]').count() == 0:
            assert time.monotonic() < deadline, "explorer.dilation = 3 did not redraw the picture"
            time.sleep(0.1)
        check_window_shown(explorer, last_row, last_col, kernel_size=3, dilation=3, size=9)

    _record_timing("jupyterlab", timing)
    print("JupyterLab click -> redraw:", timing)
    assert timing["median_frame_ms"] < MEDIAN_TARGET_MS, timing


def test_receptive_field_explorer_in_the_static_edition_without_kernel_or_network(tmp_path):
    from dilate_lab.course.static_site import build_site
    from test_static_site import explorer_notebook

    chromium = _browser_or_skip()
    pages = build_site(tmp_path / "site", explorer_notebook(tmp_path / "nb", kernel_size=3, dilation=2, size=9,
                                                            row=1, col=2))
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(chromium) as page:
        requested, errors = [], []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def only_files(route):
            requested.append(route.request.url)
            (route.continue_ if route.request.url.startswith(("file:", "data:", "blob:")) else route.abort)()

        page.route("**/*", only_files)
        page.goto(pages[1].as_uri())
        explorer = page.locator(".dl-static-explorer[data-live=true] .dl-explorer.dl-receptive-field")
        explorer.wait_for(timeout=30_000)
        check_window_shown(explorer, 1, 2, kernel_size=3, dilation=2, size=9)

        timing = click_and_drag_receptive_field(page, explorer, kernel_size=3, dilation=2, size=9)
        last_row, last_col = (7 * 19) % 9, (5 * 19 + 3) % 9
        explorer.locator(".dl-dilation input").fill("3")  # the slider: the picture follows
        check_window_shown(explorer, last_row, last_col, kernel_size=3, dilation=3, size=9)
        explorer.locator(".dl-kernel-size input").fill("5")
        check_window_shown(explorer, last_row, last_col, kernel_size=5, dilation=3, size=9)
        explorer.screenshot(path=str(ARTIFACTS / "explorer-static.png"))

    assert not errors, errors
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requested), requested
    _record_timing("static", timing)
    print("static page click -> redraw:", timing)
    assert timing["median_frame_ms"] < MEDIAN_TARGET_MS, timing


# ---------------------------------------------------------------------------
# the coverage explorer (lesson 02)
# ---------------------------------------------------------------------------
def _type_schedule(explorer, text: str) -> None:
    box = explorer.locator(".dl-dilations input")
    box.fill(text)
    box.press("Enter")  # a change event: the explorer reads the box


def _check_typed_schedules(explorer, row: int, col: int, kernel_size: int, size: int) -> list[int]:
    """A refused schedule shows parse_dilations's message in the widget and changes nothing; a good one redraws."""
    from dilate_lab.course._controls import parse_dilations

    before = explorer.locator(".dl-counts").all_inner_texts()
    _type_schedule(explorer, "1, 0, 2")
    message = explorer.locator(".dl-error")
    _wait_for(message.is_visible, "a refused schedule showed no message")
    try:
        parse_dilations("1, 0, 2", max_count=4)
    except ValueError as error:
        assert str(error) in message.inner_text()
    assert explorer.locator(".dl-counts").all_inner_texts() == before, "a refused schedule changed the maps"
    _type_schedule(explorer, "1, 2, 3, 4, 5")
    _wait_for(lambda: "at most 4 entries" in message.inner_text(), "five dilations were not refused")
    _type_schedule(explorer, "2, 5")
    _wait_for(lambda: explorer.locator("svg.dl-map").count() == 2, "the typed schedule 2, 5 was not drawn")
    assert not message.is_visible()
    check_coverage_shown(explorer, row, col, kernel_size, [2, 5], size)
    return [2, 5]


def test_coverage_explorer_click_drag_and_schedules_in_jupyterlab(tmp_path):
    chromium = _browser_or_skip()
    course = tmp_path / "course"
    _write_notebook(course, COVERAGE_CELLS, COVERAGE_NOTEBOOK)
    ARTIFACTS.mkdir(exist_ok=True)
    size = 8
    with jupyterlab_server(course, tmp_path / "jupyter") as url, chromium_page(chromium) as page:
        open_notebook(page, url, COVERAGE_NOTEBOOK)
        prompts = run_all_cells(page)
        assert all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), prompts
        explorer = page.locator(".dl-explorer.dl-coverage").first
        explorer.wait_for(timeout=60_000)
        check_coverage_shown(explorer, 0, 0, 3, [1, 2, 3], size)

        timing = click_drag_and_time(
            page, explorer, "g0", size, lambda row, col: check_coverage_shown(explorer, row, col, 3, [1, 2, 3], size)
        )
        last_row, last_col = (7 * 19) % size, (5 * 19 + 3) % size
        check_coverage_shown(explorer, last_row, last_col, 3, [1, 2, 3], size)
        explorer.screenshot(path=str(ARTIFACTS / "coverage-jupyterlab.png"))
        _run_cell(page, 1, f"query {last_row} {last_col} dilations [1, 2, 3]")  # the clicks reached the kernel

        _run_cell(page, 2, "dilations [1, 4]", "explorer.dilations = [1, 4]; print('dilations', explorer.dilations)")
        _wait_for(lambda: explorer.locator("svg.dl-map").count() == 2, "explorer.dilations = [1, 4] did not redraw")
        check_coverage_shown(explorer, last_row, last_col, 3, [1, 4], size)
        explorer.locator(".dl-kernel-size input").fill("5")
        check_coverage_shown(explorer, last_row, last_col, 5, [1, 4], size)
        explorer.locator(".dl-kernel-size input").fill("3")

        typed = _check_typed_schedules(explorer, last_row, last_col, 3, size)
        _run_cell(page, 1, f"query {last_row} {last_col} dilations {typed}")  # the typed schedule reached Python

    _record_timing("coverage_jupyterlab", timing)
    print("JupyterLab coverage click -> redraw:", timing)
    assert timing["median_frame_ms"] < MEDIAN_TARGET_MS, timing


def test_lesson_02_coverage_explorer_lives_in_the_static_edition(tmp_path):
    """The page built from lesson 02 as stored: its coverage explorer answers clicks with no kernel."""
    from dilate_lab.course.static_site import build_site

    chromium = _browser_or_skip()
    lesson = ROOT / "notebooks" / "02_swda_loops.ipynb"
    folder = tmp_path / "nb"
    folder.mkdir()
    shutil.copy(lesson, folder / lesson.name)
    page_path = build_site(tmp_path / "site", folder)[1]
    stored = re.search(r"""data-explorer="coverage" data-state=(["'])(.+?)\1""", page_path.read_text())
    assert stored, "lesson 02 does not store a CoverageExplorer"
    state = json.loads(html.unescape(stored.group(2)))
    size, kernel_size, dilations = state["size"], state["kernel_size"], state["dilations"]
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page(chromium) as page:
        requested, errors = [], []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def only_files(route):
            requested.append(route.request.url)
            (route.continue_ if route.request.url.startswith(("file:", "data:", "blob:")) else route.abort)()

        page.route("**/*", only_files)
        page.goto(page_path.as_uri())
        explorer = page.locator(".dl-static-explorer[data-live=true] .dl-explorer.dl-coverage")
        explorer.wait_for(timeout=30_000)
        check_coverage_shown(explorer, state["row"], state["col"], kernel_size, dilations, size)
        timing = click_drag_and_time(
            page, explorer, "g0", size,
            lambda row, col: check_coverage_shown(explorer, row, col, kernel_size, dilations, size),
        )
        last_row, last_col = (7 * 19) % size, (5 * 19 + 3) % size
        explorer.locator(".dl-size input").fill(str(size + 3))
        check_coverage_shown(explorer, last_row, last_col, kernel_size, dilations, size + 3)
        _check_typed_schedules(explorer, last_row, last_col, kernel_size, size + 3)
        explorer.screenshot(path=str(ARTIFACTS / "coverage-static.png"))

        # the extreme of every control: kernel 9, a 24 x 24 map, four maps of dilation 8
        explorer.locator(".dl-kernel-size input").fill("9")
        explorer.locator(".dl-size input").fill("24")
        _type_schedule(explorer, "8, 8, 8, 8")
        _wait_for(lambda: explorer.locator("svg.dl-map").count() == 4, "the schedule 8, 8, 8, 8 was not drawn")
        extreme = click_drag_and_time(
            page, explorer, "g3", 24, lambda row, col: check_coverage_shown(explorer, row, col, 9, [8] * 4, 24)
        )
        explorer.screenshot(path=str(ARTIFACTS / "coverage-static-extreme.png"))

    assert not errors, errors
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requested), requested
    _record_timing("coverage_static", timing)
    _record_timing("coverage_static_extreme", extreme)
    print("static page coverage click -> redraw:", timing, "at the extreme:", extreme)
    assert timing["median_frame_ms"] < MEDIAN_TARGET_MS, timing
    assert extreme["median_frame_ms"] < MEDIAN_TARGET_MS, extreme
