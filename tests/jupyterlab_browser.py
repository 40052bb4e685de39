"""Drive a real JupyterLab in Debian's Chromium through Playwright, for tests/test_browser.py.

A throwaway JupyterLab server serves a copy of the notebooks (JupyterLab autosaves, so the
originals are never opened) from fresh configuration folders, on a free port of 127.0.0.1,
without token, news or update checks. Chromium is the system one: Playwright's own browser
download (``playwright install``) is never used.

Gotchas this module handles (each one seen on these machines):
1. "Run All" clicked before the kernel is connected is silently dropped: wait for the
   status bar's "| Idle", then check that the cells really got execution counts.
2. The news notification shows even with news_url=None: turn it off in the settings folder.
3. A fresh workspace and ``?reset``, so no earlier layout comes back.
4. The notebook panel scrolls inside the page: scroll an element into view before its screenshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KERNEL_IDLE = "Python 3 (ipykernel) | Idle"
HOW_TO_ENABLE = (
    "install Debian's Chromium and Playwright's Python package: "
    "`apt-get install -y chromium fonts-dejavu-core fonts-liberation` and "
    "`pip install playwright` (no `playwright install` needed)"
)


def find_chromium() -> str | None:
    """Path of the system Chromium, or None."""
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def playwright_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fresh_environment(base: Path) -> dict[str, str]:
    """Every Jupyter/IPython/matplotlib folder new and empty, news and update checks off."""
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                 "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR", "MPLCONFIGDIR"):
        folder = base / name.lower()
        folder.mkdir(parents=True)
        env[name] = str(folder)
    notification = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    env.pop("JUPYTER_TOKEN", None)
    return env


@contextlib.contextmanager
def jupyterlab_server(root_dir: Path, work_dir: Path, startup_timeout: float = 60.0):
    """Start ``jupyter lab`` on root_dir; yield its base URL; stop it on exit."""
    port = free_port()
    env = _fresh_environment(work_dir)
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}", "--IdentityProvider.token=",
        "--PasswordIdentityProvider.hashed_password=", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
        "--ServerApp.allow_root=True",
    ]
    log_path = work_dir / "jupyterlab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer in {startup_timeout} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        server.terminate()  # the server we started, by its handle; it shuts its kernels down
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _prompts(page) -> list[str]:
    # textContent, not innerText: cells scrolled out of view may be skipped by the renderer
    return [p.strip() for p in page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt").all_text_contents()]


def run_all_cells(page, timeout: float = 180.0) -> list[str]:
    """Wait for an idle kernel, Run All, and wait until every code cell has an execution count."""
    page.get_by_text(KERNEL_IDLE).first.wait_for(timeout=90_000)
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=30_000)
    deadline = time.monotonic() + timeout
    clicks = 0
    while True:
        if clicks == 0 or (clicks == 1 and all(p in ("[ ]:", "") for p in _prompts(page))):
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            clicks += 1
            time.sleep(5 if clicks == 1 else 0)  # after 5 s with no prompt moving, click once more
        prompts = _prompts(page)
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            page.get_by_text(KERNEL_IDLE).first.wait_for(timeout=60_000)
            return prompts
        if time.monotonic() > deadline:
            raise AssertionError(f"cells did not all run in {timeout} s; prompts: {prompts}")
        time.sleep(0.5)


def open_notebook(page, base_url: str, notebook: str) -> None:
    page.goto(f"{base_url}/lab/tree/{notebook}?reset", wait_until="domcontentloaded")
    page.locator(".jp-Notebook").first.wait_for(timeout=60_000)


@contextlib.contextmanager
def chromium_page(executable_path: str, viewport=(1400, 1000)):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable_path, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            yield page
        finally:
            browser.close()


# ---------------------------------------------------------------------------
# the browser-native receptive-field explorer: the same checks in JupyterLab and in the static page
# ---------------------------------------------------------------------------
_TIME_CLICKS = """
async (root, cells) => {
  const results = [];
  for (const [row, col] of cells) {
    const rect = root.querySelector(`svg.dl-map rect.dl-cell[data-row="${row}"][data-col="${col}"]`);
    const box = rect.getBoundingClientRect();
    const at = {bubbles: true, clientX: box.left + box.width / 2, clientY: box.top + box.height / 2, buttons: 1};
    const start = performance.now();
    rect.dispatchEvent(new PointerEvent("pointerdown", at));
    rect.dispatchEvent(new PointerEvent("pointerup", {...at, buttons: 0}));
    await null;  // the explorer redraws in a microtask queued by the model's change event
    const drawn = performance.now();
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    const frame = performance.now();
    const shown = [root.querySelector('[data-query="row"]').textContent, root.querySelector('[data-query="col"]').textContent];
    results.push({drawnMs: drawn - start, frameMs: frame - start, shown: shown.map(Number), want: [row, col]});
  }
  return results;
}
"""


def window_cells(explorer, panel: str) -> tuple[set[tuple[int, int]], set[tuple[int, int]], tuple[int, int]]:
    """The (row, col) of the highlighted window cells on the map, of the padded ones, and the query."""
    def cells(css: str) -> set[tuple[int, int]]:
        found = explorer.locator(f'svg.dl-map[data-panel="{panel}"] rect.dl-cell{css}').evaluate_all(
            "rects => rects.map(r => [Number(r.dataset.row), Number(r.dataset.col)])"
        )
        return {tuple(cell) for cell in found}

    (query,) = cells(".query")
    return cells(".win"), cells(".pad"), query


def check_window_shown(explorer, row: int, col: int, kernel_size: int, dilation: int, size: int) -> None:
    """The highlighted cells and the counts are those of ``dilated_window`` for this query."""
    from dilate_lab.geometry import dilated_window

    want = dilated_window(row, col, kernel_size, dilation, size, size)
    inside, padded, query = window_cells(explorer, f"r{dilation}")
    assert query == (row, col)
    assert inside == set(want.inside_positions)
    assert padded == set(want.outside_positions)
    counts = explorer.locator(f'.dl-counts[data-dilation="{dilation}"]')
    assert counts.locator('[data-count="inside"]').inner_text() == str(want.n_inside)
    assert counts.locator('[data-count="padded"]').inner_text() == str(want.n_outside)
    assert counts.locator('[data-count="span"]').inner_text() == str(want.span)


def click_drag_and_time(page, explorer, panel: str, size: int, check) -> dict:
    """Click a cell of the map ``panel``, drag to another, time clicks: what a learner does with an explorer.

    ``check(row, col)`` asserts that the explorer shows that query. Returns the timing of 20
    clicks: input event -> redrawn DOM, and -> the next frame.
    """
    panel = f'svg.dl-map[data-panel="{panel}"]'
    explorer.scroll_into_view_if_needed()
    explorer.locator(f'{panel} rect.dl-cell[data-row="0"][data-col="{size - 1}"]').click()
    check(0, size - 1)

    start = explorer.locator(f'{panel} rect.dl-cell[data-row="1"][data-col="1"]').bounding_box()
    end = explorer.locator(f'{panel} rect.dl-cell[data-row="{size // 2}"][data-col="{size // 2 + 1}"]').bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=8)
    page.mouse.up()
    check(size // 2, size // 2 + 1)

    cells = [((7 * i) % size, (5 * i + 3) % size) for i in range(20)]
    cells = [cell for i, cell in enumerate(cells) if i == 0 or cell != cells[i - 1]]
    results = explorer.evaluate(_TIME_CLICKS, cells)
    for result in results:
        assert result["shown"] == result["want"], result
    drawn = sorted(r["drawnMs"] for r in results)
    frame = sorted(r["frameMs"] for r in results)
    return {
        "clicks": len(results),
        "median_drawn_ms": drawn[len(drawn) // 2], "max_drawn_ms": drawn[-1],
        "median_frame_ms": frame[len(frame) // 2], "max_frame_ms": frame[-1],
    }


def click_and_drag_receptive_field(page, explorer, kernel_size: int, dilation: int, size: int) -> dict:
    """``click_drag_and_time`` on the receptive-field explorer's map."""
    return click_drag_and_time(
        page, explorer, f"r{dilation}", size,
        lambda row, col: check_window_shown(explorer, row, col, kernel_size, dilation, size),
    )


# ---------------------------------------------------------------------------
# the browser-native coverage explorer (lesson 02)
# ---------------------------------------------------------------------------
def check_coverage_shown(explorer, row: int, col: int, kernel_size: int, dilations, size: int) -> None:
    """Every map shows the query's window (``dilated_window``), every query's keys on the map
    (``window_coverage``), and the captions count what ``padding_counts`` counts."""
    from dilate_lab.course.figures.windows import window_coverage
    from dilate_lab.geometry import dilated_window, padding_counts

    assert explorer.locator("svg.dl-map").count() == len(dilations)
    assert explorer.locator('[data-query="row"]').inner_text() == str(row)
    assert explorer.locator('[data-query="col"]').inner_text() == str(col)
    on_map = window_coverage(size, size, kernel_size, dilations)  # dilations, H, W
    kk = kernel_size * kernel_size
    for index, dilation in enumerate(dilations):
        want = dilated_window(row, col, kernel_size, dilation, size, size)
        inside, padded, query = window_cells(explorer, f"g{index}")
        assert query == (row, col)
        assert inside == set(want.inside_positions)
        assert padded == set(want.outside_positions)
        shown = explorer.locator(f'svg.dl-map[data-panel="g{index}"] rect.dl-cell[data-on-map]').evaluate_all(
            "rects => rects.map(r => [Number(r.dataset.row), Number(r.dataset.col), Number(r.dataset.onMap)])"
        )
        assert sorted(map(tuple, shown)) == [(r, c, int(on_map[index, r, c])) for r in range(size) for c in range(size)]
        counts = explorer.locator(f'.dl-counts[data-group="{index}"]')
        assert counts.get_attribute("data-dilation") == str(dilation)
        text = {name: counts.locator(f'[data-count="{name}"]').inner_text()
                for name in ("inside", "padded", "share", "full", "padded-keys")}
        everywhere = padding_counts(size, size, kernel_size, dilation)
        assert text == {
            "inside": str(want.n_inside), "padded": str(want.n_outside), "share": f"{want.n_inside / kk:.3f}",
            "full": str(int((everywhere == 0).sum())), "padded-keys": str(int(everywhere.sum())),
        }, (index, dilation)
