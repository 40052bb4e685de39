"""The static edition: pages from the stored outputs, nothing loaded from the network, explorers inlined.

The browser half (the explorer live in a file:// page with no kernel) is in
tests/test_browser_explorers.py.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from dilate_lab.course.explorers import ReceptiveFieldExplorer
from dilate_lab.course.static_site import WIDGET_STATE, WIDGET_VIEW, build_site

ROOT = Path(__file__).resolve().parents[1]
_NETWORK = re.compile(r"""(src|href)=["']https?://|@import\s+url\(["']?https?://|import\(["']https?://""")
_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nstored").decode()


def explorer_notebook(folder: Path, **settings) -> Path:
    """A lesson whose stored outputs hold a browser-native explorer and an ipywidgets explorer."""
    explorer = ReceptiveFieldExplorer(**settings)
    data, _ = explorer._repr_mimebundle_()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Lesson zero\nSee [the next lesson](01_next.ipynb); $k \\times k$ keys."),
        nbformat.v4.new_code_cell("explorer", outputs=[nbformat.v4.new_output("display_data", data=data)]),
        nbformat.v4.new_code_cell("erf_explorer()", outputs=[nbformat.v4.new_output(
            "display_data", data={"text/plain": "Explorer(erf)", WIDGET_VIEW: {"model_id": "box", "version_major": 2}},
        )]),
    ]
    notebook.metadata["widgets"] = {WIDGET_STATE: {"version_major": 2, "version_minor": 0, "state": {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_img"], "_dom_classes": ["dl-explorer"]}},
        "img": {"model_name": "ImageModel", "state": {"format": "png", "_dom_classes": ["dl-figure"]},
                "buffers": [{"path": ["value"], "encoding": "base64", "data": _PNG}]},
    }}}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / "00_zero.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Next")]), folder / "01_next.ipynb")
    return folder


def test_pages_index_and_live_explorer(tmp_path):
    pages = build_site(tmp_path / "site", explorer_notebook(tmp_path / "nb", dilation=3, row=2, col=5))
    assert [p.name for p in pages] == ["index.html", "00_zero.html", "01_next.html"]
    index = pages[0].read_text()
    assert 'href="00_zero.html">Lesson zero<' in index and 'href="01_next.html">Next<' in index
    page = pages[1].read_text()
    assert 'href="01_next.html"' in page, "links between lessons point to the pages"
    assert 'class="dl-static-explorer" data-explorer="receptive_field"' in page
    assert re.search(r"data-state=.{1,40}\"dilation\": 3, \"kernel_size\": 3, \"row\": 2", page)
    assert 'const DL_MODULES = {"receptive_field": ' in page
    assert "data:image/png;base64," + _PNG in page, "the ipywidgets explorer shows its stored picture"
    assert "needs Python" in page
    assert WIDGET_VIEW not in page and "require.min.js" not in page and "MathJax" not in page
    assert not _NETWORK.search(page), _NETWORK.search(page)
    assert "DL_MODULES" not in pages[2].read_text(), "a page without explorers carries no module"


def test_lesson_02_page_carries_its_live_coverage_explorer(tmp_path):
    """Lesson 02 as stored: its coverage explorer is inlined live, not a stored picture of Python's."""
    folder = tmp_path / "nb"
    folder.mkdir()
    lesson = ROOT / "notebooks" / "02_swda_loops.ipynb"
    (folder / lesson.name).write_bytes(lesson.read_bytes())
    page = build_site(tmp_path / "site", folder)[1].read_text()
    assert 'class="dl-static-explorer" data-explorer="coverage"' in page
    modules = re.search(r"const DL_MODULES = (\{.*?\});", page).group(1)
    assert '"coverage": ' in modules and '"receptive_field": ' in modules
    assert "needs Python" not in page, "lesson 02 shows no explorer that needs a kernel"
    assert not _NETWORK.search(page), _NETWORK.search(page)


def test_an_empty_notebooks_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="notebooks_dir"):
        build_site(tmp_path / "site", tmp_path)


def test_the_course_builds_offline_in_under_two_minutes(tmp_path):
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dilate_lab.course.static_site", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    lessons = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    built = sorted(p.stem for p in (tmp_path / "site").glob("*.html"))
    assert built == sorted([*lessons, "index"])
    for page in (tmp_path / "site").glob("*.html"):
        text = page.read_text()
        assert not _NETWORK.search(text), (page.name, _NETWORK.search(text))
    assert seconds < 120, f"the static edition took {seconds:.0f} s to build"


@pytest.mark.parametrize("tex, text", [
    (r"k \times k", "k × k"),
    (r"H \cdot W \cdot k^2", "H · W · k<sup>2</sup>"),
    (r"\mathrm{DWConv}_{3 \times 3}(X)", "DWConv<sub>3 × 3</sub>(X)"),
    (r"p, q \in \{-1, 0, 1\}", "p, q ∈ {-1, 0, 1}"),
    (r"\frac{QK^\top}{\sqrt{d}}", "(QK<sup>T</sup>)/(√(d))"),
    (r"a < b", "a &lt; b"),
])
def test_formulas_read_as_text_without_mathjax(tex, text):
    from dilate_lab.course.static_site import tex_to_text

    assert tex_to_text(tex) == text


def test_formulas_in_the_page_but_not_in_code(tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# Costs\nA window costs $N k^2$; `$HOME` stays code.\n\n$$x_{ij} = \\sum_o w_o v_o$$"
    )])
    nbformat.write(notebook, folder / "00_costs.ipynb")
    page = build_site(tmp_path / "site", folder)[1].read_text()
    assert '<span class="dl-math" title="N k^2">N k<sup>2</sup></span>' in page
    assert "<code>$HOME</code>" in page
    assert 'class="dl-math"' in page and "x<sub>ij</sub> = ∑<sub>o</sub> w<sub>o</sub> v<sub>o</sub>" in page
