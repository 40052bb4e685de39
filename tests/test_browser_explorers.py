"""The browser-native receptive-field explorer in a real browser: JupyterLab, and the static edition.

In JupyterLab: a small notebook shows ``ReceptiveFieldExplorer``; the test clicks and drags
the query on the map and checks the highlighted cells and the counts against
``dilated_window``, checks that the click reached the kernel (``explorer.row``,
``explorer.col``) and that ``explorer.dilation = 3`` set in Python moves the picture.
It times 20 clicks from the input event to the redrawn picture (and to the next frame)
and writes the numbers to ``test-artifacts/explorer-timing.json``.

Skipped, like tests/test_browser.py, where Chromium or Playwright is missing;
``DILATE_LAB_REQUIRE_BROWSER=1`` turns the skip into a failure.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat

from jupyterlab_browser import (
    check_window_shown,
    chromium_page,
    click_and_drag_receptive_field,
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


def _write_notebook(folder: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / NOTEBOOK)


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

    (ARTIFACTS / "explorer-timing.json").write_text(json.dumps({"jupyterlab": timing}, indent=1))
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
    saved = ARTIFACTS / "explorer-timing.json"
    record = json.loads(saved.read_text()) if saved.exists() else {}
    saved.write_text(json.dumps({**record, "static": timing}, indent=1))
    print("static page click -> redraw:", timing)
    assert timing["median_frame_ms"] < MEDIAN_TARGET_MS, timing
