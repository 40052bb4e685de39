"""The browser-native explorers: their JavaScript geometry equals the package's, their traits are checked.

The geometry the explorers draw is computed in the browser by
``dilate_lab/course/explorers/geometry.js``. These tests run its functions with
node over grids of settings and compare every number with the Python functions
the rest of the test suite checks: ``dilated_window``, ``padding_counts``,
``window_span``, NATTEN's ``shifted_window``, MSDA's ``head_groups``, the coverage
maps of ``window_coverage`` (and their sums over the map),
``unfold_integer_map`` (a real ``F.unfold``), ``dilateformer_stage_shapes`` (a real
model), ``trace_msda_shapes`` (a real forward pass) and the schedule parser
``parse_dilations``. Skipped where node is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from dilate_lab.course._controls import parse_dilations
from dilate_lab.course.explorers import (
    EXPLORER_MODULES,
    BorderExplorer,
    CoverageExplorer,
    MultiScaleExplorer,
    ReceptiveFieldExplorer,
    ShapeTracerExplorer,
    UnfoldExplorer,
    esm_source,
)
from dilate_lab.course.figures.borders import shifted_window
from dilate_lab.course.figures.unfold import unfold_integer_map
from dilate_lab.course.figures.windows import head_groups, window_coverage
from dilate_lab.geometry import dilated_window, padding_counts, window_span

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node (Node.js) is needed to run the explorers' JavaScript")
GEOMETRY_JS = Path(str(resources.files("dilate_lab.course.explorers").joinpath("geometry.js")))

_RUNNER = """
import * as g from %s;
let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const calls = JSON.parse(input);
  const out = calls.map(([name, args]) => g[name](...args));
  process.stdout.write(JSON.stringify(out));
});
"""


def run_js(calls: list[tuple[str, list]]) -> list:
    """Call geometry.js's functions in node, one (name, args) per call; return their JSON results."""
    script = _RUNNER % json.dumps(GEOMETRY_JS.as_uri())
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script], input=json.dumps(calls),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _map_settings():
    for kernel_size in (1, 3, 5, 7):
        for dilation in (1, 2, 3, 4):
            for height, width in ((1, 1), (3, 5), (6, 4), (9, 9)):
                yield kernel_size, dilation, height, width


@needs_node
def test_dilated_window_and_span_equal_python():
    calls, expected = [], []
    for k, r, h, w in _map_settings():
        for row in range(h):
            for col in range(w):
                calls.append(("dilatedWindow", [row, col, k, r, h, w]))
                expected.append(dilated_window(row, col, k, r, h, w))
        calls.append(("windowSpan", [k, r]))
        expected.append(window_span(k, r))
    for got, want in zip(run_js(calls), expected, strict=True):
        if isinstance(want, int):
            assert got == want
            continue
        assert [tuple(p) for p in got["positions"]] == list(want.positions)
        assert tuple(got["outside"]) == want.outside
        assert (got["nInside"], got["nOutside"], got["span"]) == (want.n_inside, want.n_outside, want.span)


@needs_node
def test_padding_counts_equal_python():
    settings = list(_map_settings())
    got = run_js([("paddingCounts", [h, w, k, r]) for k, r, h, w in settings])
    for counts, (k, r, h, w) in zip(got, settings, strict=True):
        assert counts == padding_counts(h, w, k, r).tolist(), (k, r, h, w)


@needs_node
def test_window_coverage_and_its_sums_equal_python():
    cases = [(h, w, k, dil) for h, w in ((1, 1), (3, 5), (8, 8), (11, 6)) for k in (1, 3, 5, 9)
             for dil in ([1], [1, 2, 3], [8, 8, 8, 8], [4, 2])]
    got = run_js([("windowCoverage", list(case)) for case in cases])
    for result, (h, w, k, dil) in zip(got, cases, strict=True):
        on_map = window_coverage(h, w, k, dil)  # dilations, H, W
        kk = k * k
        assert [panel["dilation"] for panel in result] == dil
        for panel, grid, r in zip(result, on_map, dil, strict=True):
            assert panel["onMap"] == grid.tolist(), (h, w, k, r)
            padded = padding_counts(h, w, k, r)  # the package's count of padded keys, query by query
            assert panel["paddedKeys"] == int(padded.sum()) == h * w * kk - int(grid.sum())
            assert panel["fullQueries"] == int((padded == 0).sum())
            assert panel["keys"] == h * w * kk
            assert panel["meanShare"] == pytest.approx(float(grid.mean()) / kk, abs=1e-12)


@needs_node
def test_typed_schedules_follow_parse_dilations_and_its_messages():
    texts = ["1, 2, 3", " 2;4 ", "1,", "8, 8, 8, 8", "+3", "01, 2", "", " , ", "two", "1, two", "1.5", "1 2",
             "0", "9", "-1", "1, 0, 2", "1, 2, 3, 4, 5", "it's", "1,1,1,1,1,1,1,1,1"]
    calls = [("parseDilations", [text, "dilations", count]) for text in texts for count in (4, 8)]
    for result, (_, (text, name, count)) in zip(run_js(calls), calls, strict=True):
        try:
            want = parse_dilations(text, name, max_count=count)
        except ValueError as error:
            assert (result["values"], result["error"]) == (None, str(error)), text
        else:
            assert (tuple(result["values"]), result["error"]) == (want, None), text


@needs_node
def test_natten_shifted_window_equals_python_and_refuses_the_same_maps():
    calls, expected = [], []
    for k in (1, 3, 5):
        for r in (1, 2, 3):
            for h, w in ((5, 7), (9, 9), (10, 6)):
                for row in range(h):
                    for col in range(w):
                        calls.append(("shiftedWindow", [row, col, k, r, h, w]))
                        try:
                            expected.append(shifted_window(row, col, k, r, h, w))
                        except ValueError as error:
                            expected.append(str(error))
    for got, want in zip(run_js(calls), expected, strict=True):
        if isinstance(want, str):
            assert got["error"] == want and got["positions"] == []
        else:
            assert got["error"] is None and [tuple(p) for p in got["positions"]] == want


@needs_node
def test_head_groups_equal_msda_split_and_its_messages():
    cases = [(dim, heads, dil, k) for dim in (72, 100, 144) for heads in (2, 3, 4, 6, 12)
             for dil in ([1, 2, 3], [1, 2], [2], [1, 2, 3, 4]) for k in (3, 5)]
    got = run_js([("headGroups", list(case)) for case in cases])
    for result, (dim, heads, dil, k) in zip(got, cases, strict=True):
        try:
            groups = head_groups(dim, heads, dil, k)
        except ValueError as error:
            assert result["error"] == str(error) and result["groups"] == []
            continue
        assert result["error"] is None
        assert [(g["dilation"], g["heads"], g["channels"], g["span"]) for g in result["groups"]] == [
            (g.dilation, [g.heads.start, g.heads.stop], [g.channels.start, g.channels.stop], g.span) for g in groups
        ]


@needs_node
def test_unfold_columns_equal_torch_unfold():
    settings = [(h, w, k, r) for h in (2, 4, 6) for w in (3, 5) for k in (1, 3, 5) for r in (1, 2, 3)]
    got = run_js([("unfoldColumns", list(s)) for s in settings])
    for columns, (h, w, k, r) in zip(got, settings, strict=True):
        assert columns == unfold_integer_map(h, w, k, r).tolist(), (h, w, k, r)


@needs_node
def test_stage_shapes_equal_a_real_dilateformer():
    from dilate_lab.course.figures.architecture import dilateformer_stage_shapes
    from dilate_lab.nn import DilateFormer

    configs = [
        dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(3, 3, 6, 6), dilation=(1, 2, 3)),
        dict(embed_dim=16, depths=(1, 2, 1), num_heads=(2, 2, 4), dilation=(1, 3),
             dilate_attention=(True, False, False), downsamples=(True, False, False)),
    ]
    calls, expected = [], []
    for config in configs:
        model = DilateFormer(num_classes=0, **config)
        for image_size in (32, 57, 224):
            calls.append(("stageShapes", [
                image_size, model.embed_dim, list(model.depths), list(model.num_heads), list(model.dilation),
                list(model.dilate_attention), list(model.downsamples),
            ]))
            expected.append(dilateformer_stage_shapes(model, image_size))
    for got, want in zip(run_js(calls), expected, strict=True):
        assert [(s["channels"], s["height"], s["width"], s["depth"], s["kind"], s["numHeads"],
                 tuple(s["dilation"]) if s["dilation"] else None) for s in got] == [
            (s.channels, s.height, s.width, s.depth, s.kind, s.num_heads, s.dilation) for s in want
        ]


@needs_node
def test_msda_shapes_equal_a_traced_forward_pass():
    from dilate_lab.course.shapes import trace_msda_shapes

    cases = [(b, c, h, w, heads, k, dil, impl) for b, c, h, w in ((1, 72, 14, 14), (2, 24, 5, 7))
             for heads in (3, 4, 6) for k in (3, 5) for dil in ([1, 2, 3], [1, 2]) for impl in ("unfold", "shift")]
    got = run_js([("msdaShapes", list(case)) for case in cases])
    for result, case in zip(got, cases, strict=True):
        try:
            rows = trace_msda_shapes(*case[:6], tuple(case[6]), impl=case[7])
        except ValueError as error:
            assert result["error"] == str(error), case
            continue
        assert result["error"] is None
        assert [(r["step"], tuple(r["shape"]), r["nbytes"], r["kkCopy"], r["group"]) for r in result["rows"]] == [
            (r.step, r.shape, r.nbytes, r.kk_copy, r.group) for r in rows
        ], case


@needs_node
@pytest.mark.parametrize("module", EXPLORER_MODULES)
def test_every_explorer_module_loads_and_exports_render(module):
    source = esm_source(module) + "\nconsole.log(typeof (await import('data:text/javascript,')) && typeof render);"
    done = subprocess.run([NODE, "--input-type=module", "-e", source], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "function"


# ---------------------------------------------------------------------------
# the Python side: traitlets, checks, the static fallback
# ---------------------------------------------------------------------------
def test_setting_a_trait_from_python_changes_the_state_the_picture_reads():
    explorer = ReceptiveFieldExplorer()
    explorer.dilation = 3
    explorer.kernel_size = 5
    assert explorer.get_state()["dilation"] == 3 and explorer.get_state()["kernel_size"] == 5
    assert explorer.state() == {"col": 2, "compare": False, "dilation": 3, "kernel_size": 5, "row": 1, "size": 9}


@pytest.mark.parametrize(
    "cls, name, bad",
    [(ReceptiveFieldExplorer, "kernel_size", 4), (ReceptiveFieldExplorer, "dilation", 0),
     (ReceptiveFieldExplorer, "size", 33), (BorderExplorer, "dilation", 9), (UnfoldExplorer, "height", 7),
     (ShapeTracerExplorer, "batch", 0), (MultiScaleExplorer, "num_heads", True),
     (CoverageExplorer, "kernel_size", 2), (CoverageExplorer, "size", 25), (CoverageExplorer, "dilations", [1, 2, 3, 4, 5]),
     (CoverageExplorer, "dilations", [0]), (CoverageExplorer, "dilations", [])],
)
def test_a_value_out_of_range_is_refused_naming_the_setting(cls, name, bad):
    explorer = cls()
    before = getattr(explorer, name)
    with pytest.raises(ValueError, match=name):
        setattr(explorer, name, bad)
    assert getattr(explorer, name) == before
    with pytest.raises(ValueError, match=name):
        cls(**{name: bad})


def test_an_unknown_setting_is_refused_with_the_list_of_settings():
    with pytest.raises(ValueError, match="no setting 'dilatoin'.*dilation"):
        ReceptiveFieldExplorer(dilatoin=2)


def test_the_query_is_clamped_onto_the_map_when_the_map_shrinks():
    explorer = ReceptiveFieldExplorer(size=12, row=11, col=3)
    explorer.size = 5
    assert (explorer.row, explorer.col) == (4, 3)
    explorer.row = -3
    assert explorer.row == 0
    unfold = UnfoldExplorer(height=6, width=3, row=9, col=9)
    assert (unfold.row, unfold.col) == (5, 2)


def test_coverage_explorer_state_is_read_and_set_from_python():
    explorer = CoverageExplorer(size=6, kernel_size=5, dilations=[1, 3], row=5, col=9)
    assert explorer.state() == {"col": 5, "dilations": [1, 3], "kernel_size": 5, "row": 5, "size": 6}
    explorer.dilations = [2, 2, 2, 2]
    explorer.size = 4  # the query follows onto the smaller map
    assert explorer.get_state()["dilations"] == [2, 2, 2, 2] and (explorer.row, explorer.col) == (3, 3)
    data, _ = explorer._repr_mimebundle_()
    assert 'data-explorer="coverage"' in data["text/html"]


@pytest.mark.parametrize("cls", [MultiScaleExplorer, ShapeTracerExplorer])
def test_dilation_lists_are_checked_and_head_splits_report_msda_message(cls):
    explorer = cls()
    with pytest.raises(ValueError, match="dilations"):
        explorer.dilations = [1, 0]
    with pytest.raises(ValueError, match="dilations"):
        explorer.dilations = []
    assert explorer.error is None
    explorer.dilations = [1, 2, 3, 4]
    assert "must be a multiple of len(" in explorer.error


def test_the_output_carries_a_static_fallback_with_the_state():
    explorer = BorderExplorer(row=2)
    data, _ = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert 'data-explorer="border"' in data["text/html"]
    assert "&quot;row&quot;: 2" in data["text/html"]
    assert data["text/plain"] == repr(explorer)


def test_the_modules_ship_in_the_package():
    for module in EXPLORER_MODULES:
        source = esm_source(module)
        assert "export function dilatedWindow" in source and source.rstrip().endswith("export default { render };")
    with pytest.raises(ValueError, match="module must be one of"):
        esm_source("nope")
