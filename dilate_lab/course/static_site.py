"""The static edition of the course: every lesson as an HTML page, readable with no kernel and no network.

    python -m dilate_lab.course.static_site OUT_DIR

writes ``OUT_DIR/index.html`` and one page per notebook of ``notebooks/``, from the
outputs stored in the notebooks (nothing is executed). Open ``index.html`` from
the file system (a file:// URL); no server is needed.

What it takes care of, because nbconvert's ``lab`` template alone would not work
offline:

- The template loads require.js, MathJax, mermaid and the ipywidgets HTML manager
  from CDNs. The pages here load nothing: those blocks are emptied. Mathematics
  is not typeset: ``tex_to_text`` turns each formula into plain HTML text
  (``k \\times k`` -> k × k, ``k^2`` -> k<sup>2</sup>), its TeX kept in the tooltip.
- A browser-native explorer (``dilate_lab.course.explorers``) stores, next to its
  widget view, a ``<div class="dl-static-explorer">`` with its name and state. The
  page inlines the explorer's ES module (the same file JupyterLab runs) and renders
  it into that div with a small model object (get / set / on / off / save_changes
  over a plain object) in place of the kernel's: the explorer stays live.
- An ipywidgets explorer (the ones that need tensors) cannot run without Python;
  the page shows the picture it had when the notebook was stored (the PNG kept in
  the notebook's widget state) and says so.
- Links between lessons (``02_swda_loops.ipynb``) point to the pages instead.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import sys
import time
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbconvert import HTMLExporter

from .explorers import EXPLORER_MODULES, esm_source

__all__ = ["build_site", "static_model_script", "tex_to_text", "main"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_MARKER = "dl-static-explorer"

_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}
<style>.dl-math { font-family: "DejaVu Serif", Georgia, serif; font-style: italic; white-space: nowrap; }
div.dl-math { text-align: center; margin: 0.6em 0; }</style>
{%- endblock html_head_js_mermaidjs -%}
{%- block body_footer -%}
<p style="margin: 2em 0; font-size: 12px"><a href="index.html">&larr; all lessons</a></p>
{{ resources.dl_explorer_script }}
{{ super() }}
{%- endblock body_footer -%}
"""

# The kernel's model, replaced by a plain object: what an anywidget ES module calls.
_MODEL_JS = """
function staticModel(state) {
  const handlers = new Map();
  return {
    get: (name) => state[name],
    set(name, value) {
      if (state[name] === value) return;
      state[name] = value;
      for (const handler of handlers.get(`change:${name}`) || []) handler();
    },
    on(event, handler) { if (!handlers.has(event)) handlers.set(event, []); handlers.get(event).push(handler); },
    off(event, handler) { handlers.set(event, (handlers.get(event) || []).filter((h) => h !== handler)); },
    save_changes() {},
    send() {},
  };
}
const loaded = new Map();
for (const el of document.querySelectorAll("div.dl-static-explorer")) {
  const name = el.dataset.explorer;
  if (!(name in DL_MODULES)) continue;
  if (!loaded.has(name)) {
    const url = "data:text/javascript;base64," + DL_MODULES[name];
    loaded.set(name, import(url));
  }
  const module = await loaded.get(name);
  el.innerHTML = "";
  el.dataset.live = "true";
  module.default.render({ model: staticModel(JSON.parse(el.dataset.state)), el });
}
"""


def static_model_script(modules: set[str]) -> str:
    """The ``<script type="module">`` that brings the page's explorers to life; "" if it has none."""
    if not modules:
        return ""
    sources = {
        name: base64.b64encode(esm_source(name).encode("utf-8")).decode("ascii") for name in sorted(modules)
    }
    return f'<script type="module">\nconst DL_MODULES = {json.dumps(sources)};\n{_MODEL_JS}</script>'


# ---------------------------------------------------------------------------
# mathematics without MathJax: TeX turned into plain HTML text, readable if not typeset
# ---------------------------------------------------------------------------
_TEX_SYMBOLS = {
    "cdot": "·", "times": "×", "lfloor": "⌊", "rfloor": "⌋", "alpha": "α", "beta": "β", "sigma": "σ",
    "ell": "ℓ", "top": "T", "in": "∈", "infty": "∞", "to": "→", "sum": "∑", "approx": "≈", "dots": "…",
    "ldots": "…", "cdots": "⋯", "leftarrow": "←", "rightarrow": "→", "le": "≤", "leq": "≤", "ge": "≥",
    "geq": "≥", "mid": "|", "pm": "±", "log": "log", "max": "max", "min": "min", "exp": "exp", "sqrt": "√",
    "quad": "\u2003", "qquad": "\u2003\u2003", ",": "\u2009", ";": "\u2005", " ": " ", "!": "", "{": "\x00(", "}": "\x00)",
    "left": "", "right": "", "big": "", "Big": "", "neq": "≠", "lambda": "λ", "mu": "μ", "pi": "π",
}
_TEX_GROUP = r"\{((?:[^{}]|\{[^{}]*\})*)\}"
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$", re.S)
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)


def tex_to_text(tex: str) -> str:
    """Inline TeX as HTML text: symbols as Unicode, ^ and _ as <sup> and <sub>, \\frac{a}{b} as (a)/(b).

    Not a typesetter: a fallback, so that a page with no MathJax reads ``k × k`` and
    ``H·W·k<sup>2</sup>`` rather than ``k \\times k``.
    """
    text = html.escape(tex.strip(), quote=False)
    for command in ("text", "mathrm", "operatorname", "mathbb", "mathbf", "tilde", "hat", "bar"):
        text = re.sub(rf"\\{command}\s*{_TEX_GROUP}", r"\1", text)
    text = re.sub(rf"\\t?frac\s*{_TEX_GROUP}\s*{_TEX_GROUP}", r"(\1)/(\2)", text)
    text = re.sub(rf"\\sqrt\s*{_TEX_GROUP}", r"√(\1)", text)
    text = re.sub(r"\\([A-Za-z]+|[,;! {}])", lambda m: _TEX_SYMBOLS.get(m.group(1), m.group(1)), text)
    text = re.sub(rf"\^{_TEX_GROUP}|\^(\S)", lambda m: f"<sup>{m.group(1) or m.group(2)}</sup>", text)
    text = re.sub(rf"_{_TEX_GROUP}|_(\S)", lambda m: f"<sub>{m.group(1) or m.group(2)}</sub>", text)
    return text.replace("{", "").replace("}", "").replace("\x00(", "{").replace("\x00)", "}")


def _plain_math(markdown: str) -> str:
    """Every $...$ and $$...$$ of a markdown cell (outside code) as ``tex_to_text`` HTML."""
    def convert(match: re.Match) -> str:
        display, inline = match.group(1), match.group(2)
        if display is not None:
            return f'<div class="dl-math" title="{html.escape(display.strip())}">{tex_to_text(display)}</div>'
        return f'<span class="dl-math" title="{html.escape(inline.strip())}">{tex_to_text(inline)}</span>'

    parts = _CODE.split(markdown)
    return "".join(part if i % 2 else _MATH.sub(convert, part) for i, part in enumerate(parts))


def _stored_picture(model_id: str, state: dict) -> str:
    """The PNGs and HTML tables an ipywidgets explorer held when the notebook was stored."""
    parts, seen, stack = [], set(), [model_id]
    while stack:
        current = stack.pop(0)
        if current in seen or current not in state:
            continue
        seen.add(current)
        model = state[current]
        values = model.get("state", {})
        if model.get("model_name") == "ImageModel":
            for buffer in model.get("buffers", []):
                if buffer.get("path") == ["value"] and buffer.get("encoding") == "base64":
                    parts.append(f'<img alt="stored picture" src="data:image/{values.get("format", "png")};base64,{buffer["data"]}">')
        elif model.get("model_name") == "HTMLModel" and "dl-table" in values.get("_dom_classes", []):
            parts.append(values.get("value", ""))
        stack += [child.removeprefix("IPY_MODEL_") for child in values.get("children", [])]
    note = (
        '<p class="dl-stored-note" style="font-size:12px;color:#555"><em>An interactive explorer that needs '
        "Python: here, the picture it showed when the lesson was stored. Run the notebook in JupyterLab "
        "to move its controls.</em></p>"
    )
    return note + "".join(parts)


def _prepare(notebook: nbformat.NotebookNode) -> set[str]:
    """Rewrite widget outputs for a page with no kernel; return the explorer modules the page needs."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    modules = set()
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            page_html = data.get("text/html", "")
            if isinstance(page_html, list):
                page_html = "".join(page_html)
            if _MARKER in page_html:
                modules.update(name for name in EXPLORER_MODULES if f'data-explorer="{name}"' in page_html)
            else:
                data["text/html"] = _stored_picture(data[WIDGET_VIEW].get("model_id", ""), state)
            del data[WIDGET_VIEW]
        if cell.cell_type == "markdown":
            cell.source = _plain_math(re.sub(r"\]\((\d\d[a-z]?_[\w-]+)\.ipynb", r"](\1.html", cell.source))
    notebook.metadata.pop("widgets", None)
    return modules


def _title(notebook: nbformat.NotebookNode, fallback: str) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if match:
                return match.group(1).strip()
    return fallback


def _index_page(lessons: list[tuple[str, str]]) -> str:
    items = "\n".join(f'<li><a href="{html.escape(page)}">{html.escape(title)}</a></li>' for page, title in lessons)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dilate-lab: the course</title>
<style>body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 46em; margin: 2em auto; padding: 0 1em; }}
li {{ margin: 0.4em 0; list-style: none; }}</style></head>
<body><h1>dilate-lab: Sliding Window and Multi-Scale Dilated Attention</h1>
<p>The static edition of the course: every lesson with the outputs stored in its notebook. The
window explorers run in this page (drag the query on the map); the explorers that need Python show the
picture they had when the lesson was stored. To run the code, open the notebooks in JupyterLab.</p>
<ul>
{items}
</ul></body></html>
"""


def build_site(out_dir: Path, notebooks_dir: Path) -> list[Path]:
    """Write one page per notebook of ``notebooks_dir`` and ``index.html`` into ``out_dir``."""
    notebooks = sorted(Path(notebooks_dir).glob("[0-9][0-9]*_*.ipynb"))
    if not notebooks:
        raise ValueError(f"notebooks_dir must hold the lessons (NN_name.ipynb), found none in {notebooks_dir}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(
        template_name="lab", extra_loaders=[DictLoader({"dl_static.html.j2": _TEMPLATE})],
        template_file="dl_static.html.j2",
    )
    pages, lessons = [], []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        modules = _prepare(notebook)
        title = _title(notebook, path.stem)
        body, _ = exporter.from_notebook_node(
            notebook, resources={"metadata": {"name": title}, "dl_explorer_script": static_model_script(modules)}
        )
        page = out_dir / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
        lessons.append((page.name, title))
    index = out_dir / "index.html"
    index.write_text(_index_page(lessons), encoding="utf-8")
    return [index, *pages]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dilate_lab.course.static_site",
        description="Build the static edition of the course (HTML pages, no kernel, no network).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write index.html and the lesson pages into")
    parser.add_argument("--notebooks", type=Path, default=Path(__file__).resolve().parents[2] / "notebooks",
                        help="folder of the lesson notebooks (default: the repository's notebooks/)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        pages = build_site(args.out_dir, args.notebooks)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(pages)} pages to {args.out_dir} in {time.perf_counter() - start:.1f} s; "
          f"open {(args.out_dir / 'index.html').resolve().as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
