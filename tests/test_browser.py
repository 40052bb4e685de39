"""The first lesson in a real browser: JupyterLab, Chromium, the receptive-field explorer.

Opens a copy of ``notebooks/00_start_here.ipynb`` in JupyterLab, runs every cell, clicks
dilation 3 on the receptive-field explorer and checks that the figure is redrawn, and that
no cell shows a traceback. Where the lesson shows the browser-native explorer
(``ReceptiveFieldExplorer``), it clicks a cell of the map and moves the dilation slider to 3,
and checks the highlighted cells and counts against ``dilated_window``. Screenshots go to ``test-artifacts/``.

Skipped, with a message saying how to enable it, where Chromium or Playwright is missing;
``DILATE_LAB_REQUIRE_BROWSER=1`` (set by CI) turns that skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from jupyterlab_browser import (
    HOW_TO_ENABLE,
    check_window_shown,
    chromium_page,
    find_chromium,
    jupyterlab_server,
    open_notebook,
    playwright_available,
    run_all_cells,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts"
START_NOTEBOOK = "00_start_here.ipynb"


def _browser_or_skip() -> str:
    chromium = find_chromium()
    missing = [name for name, ok in (("Chromium", chromium), ("Playwright", playwright_available())) if not ok]
    if missing:
        message = f"real-browser test needs {' and '.join(missing)}: {HOW_TO_ENABLE}"
        if os.environ.get("DILATE_LAB_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (DILATE_LAB_REQUIRE_BROWSER=1 makes this a failure)")
        pytest.skip(message + "; DILATE_LAB_REQUIRE_BROWSER=1 makes this a failure")
    return chromium


def check_receptive_field_explorer(chromium: str, course: Path, notebook: str, work: Path, artifacts: Path) -> None:
    """Run ``notebook`` in JupyterLab, change the explorer's dilation, check the figure changed."""
    artifacts.mkdir(exist_ok=True)
    with jupyterlab_server(course, work) as url, chromium_page(chromium) as page:
        open_notebook(page, url, notebook)
        prompts = run_all_cells(page)
        assert prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts), prompts

        outputs = " ".join(page.locator(".jp-Notebook .jp-OutputArea-output").all_text_contents())
        assert "Traceback" not in outputs, outputs[-2000:]

        explorer = page.locator(".dl-receptive-field").first
        explorer.wait_for(timeout=60_000)
        if explorer.locator("svg.dl-map").count() or "dl-x" in (explorer.get_attribute("class") or ""):
            check_browser_native_explorer(page, explorer, artifacts)  # the lesson shows the anywidget one
            return
        figure = explorer.locator("img.dl-figure")
        figure.wait_for(timeout=30_000)
        explorer.scroll_into_view_if_needed()
        before_src = figure.get_attribute("src")
        before_png = figure.screenshot(path=str(artifacts / "receptive-field-before.png"))

        explorer.locator(".dl-dilation button", has_text=re.compile(r"^\s*3\s*$")).click()
        deadline = time.monotonic() + 30
        while figure.get_attribute("src") == before_src:
            assert time.monotonic() < deadline, "the figure was not redrawn within 30 s of clicking dilation 3"
            time.sleep(0.2)
        time.sleep(0.3)  # let the new image decode before the screenshot
        explorer.scroll_into_view_if_needed()
        after_png = figure.screenshot(path=str(artifacts / "receptive-field-after.png"))
        page.screenshot(path=str(artifacts / "receptive-field-page.png"))

        assert after_png != before_png, "the image source changed but the picture did not"
        selected = explorer.locator(".dl-dilation button.mod-active").inner_text().strip()
        assert selected == "3"
        assert explorer.locator(".dl-error").count() == 0


def check_browser_native_explorer(page, explorer, artifacts: Path) -> None:
    """The anywidget explorer: the cells and counts follow a click and the dilation slider."""
    explorer.scroll_into_view_if_needed()
    settings = {name: int(explorer.locator(f".dl-{name} output").inner_text()) for name in ("kernel-size", "dilation", "size")}
    kernel_size, size = settings["kernel-size"], settings["size"]
    explorer.screenshot(path=str(artifacts / "receptive-field-before.png"))
    explorer.locator(f'svg.dl-map[data-panel="r{settings["dilation"]}"] rect.dl-cell[data-row="0"][data-col="{size - 1}"]').click()
    check_window_shown(explorer, 0, size - 1, kernel_size, settings["dilation"], size)
    explorer.locator(".dl-dilation input").fill("3")
    check_window_shown(explorer, 0, size - 1, kernel_size, 3, size)
    explorer.screenshot(path=str(artifacts / "receptive-field-after.png"))
    page.screenshot(path=str(artifacts / "receptive-field-page.png"))
    assert explorer.locator(".dl-error").count() == 0


def test_receptive_field_explorer_in_jupyterlab(tmp_path):
    chromium = _browser_or_skip()
    notebook = NOTEBOOKS / START_NOTEBOOK
    assert notebook.exists(), f"{notebook} is missing"
    assert re.search(r"receptive_field_explorer|ReceptiveFieldExplorer", notebook.read_text()), (
        f"{START_NOTEBOOK} must display a receptive-field explorer for this test"
    )
    course = tmp_path / "course"
    shutil.copytree(NOTEBOOKS, course, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    check_receptive_field_explorer(chromium, course, START_NOTEBOOK, tmp_path / "jupyter", ARTIFACTS)
