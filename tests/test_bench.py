"""The benchmark: its reduced mode in-process, the CLI once, and the memory meter.

Speeds are not asserted here (a shared machine makes them noise); what is
asserted is that every case runs and reports consistent fields, and that the
peak-memory meter counts bytes exactly.
"""

import json
import subprocess
import sys

import pytest
import torch

from compiled import compiled_or_skip
from dilate_lab.bench import (
    QUICK_LAYOUTS,
    TARGETS,
    check_targets,
    format_table,
    peak_memory_bytes,
    run_benchmark,
    run_scaling,
    scaling_figure,
)

MIB = 2**20
TIMED_FIELDS = {
    "device",
    "device_name",
    "impl",
    "layout",
    "layout_desc",
    "repeats",
    "floor_ms",
    "forward_ms",
    "fwd_bwd_ms",
    "forward_peak_mb",
    "fwd_bwd_peak_mb",
    "forward_vs_floor",
    "forward_speedup",
    "fwd_bwd_speedup",
    "fwd_bwd_memory_fraction",
}


@pytest.fixture(scope="module")
def quick_rows():
    compiled_or_skip()  # the CPU's fast path, whose targets the table checks
    return run_benchmark("cpu", impls=["shift", "fused", "cpp"], quick=True, threads=1, progress=None)


def test_peak_memory_counts_bytes_exactly():
    """Held together: 1 MiB + 2 MiB; one after the other: only the larger counts."""

    def held_together():
        a = torch.empty(MIB // 4)  # 1 MiB of float32
        b = torch.empty(MIB // 2)  # 2 MiB
        del a, b

    def one_after_the_other():
        a = torch.empty(MIB // 4)
        del a
        b = torch.empty(MIB // 2)
        del b

    assert peak_memory_bytes(held_together, "cpu") == 3 * MIB
    assert peak_memory_bytes(one_after_the_other, "cpu") == 2 * MIB
    assert peak_memory_bytes(lambda: None, "cpu") == 0


def test_quick_rows_have_every_field(quick_rows):
    layouts = [layout.name for layout in QUICK_LAYOUTS]
    assert [(r["layout"], r["impl"]) for r in quick_rows] == [
        (layout, impl) for layout in layouts for impl in ("unfold", "shift", "fused", "cpp")
    ]
    for row in quick_rows:
        assert TIMED_FIELDS <= set(row), TIMED_FIELDS - set(row)
        assert row["device"] == "cpu" and row["repeats"] == 2
        assert row["forward_ms"] > 0 and row["fwd_bwd_ms"] > 0 and row["floor_ms"] > 0
        assert row["fwd_bwd_peak_mb"] > 0
        assert row["forward_vs_floor"] == pytest.approx(row["forward_ms"] / row["floor_ms"])


def test_ratios_are_against_unfold_of_the_same_layout(quick_rows):
    for layout in {r["layout"] for r in quick_rows}:
        rows = {r["impl"]: r for r in quick_rows if r["layout"] == layout}
        base = rows["unfold"]
        assert base["forward_speedup"] == pytest.approx(1.0)
        assert base["fwd_bwd_memory_fraction"] == pytest.approx(1.0)
        for fast in (rows["fused"], rows["cpp"]):
            assert fast["fwd_bwd_speedup"] == pytest.approx(base["fwd_bwd_ms"] / fast["fwd_bwd_ms"])
            # memory is deterministic: neither holds a k*k copy of K or V, unfold does
            assert fast["fwd_bwd_memory_fraction"] < 0.5


def test_targets_and_table(quick_rows):
    targets = check_targets(quick_rows)
    assert {t["target"] for t in targets} == set(TARGETS)
    assert {t["impl"] for t in targets} == {"cpp"}  # what impl="auto" runs on this CPU
    for t in targets:
        assert t["met"] == (
            t["value"] <= t["goal"] if t["comparison"] == "<=" else t["value"] >= t["goal"]
        )
    table = format_table(quick_rows)
    assert table.splitlines()[0].startswith("| implementation | layout | forward ms")
    for impl in ("fused", "cpp"):
        assert sum(line.startswith(f"| {impl} |") for line in table.splitlines()) == len(QUICK_LAYOUTS)
    for row in quick_rows:
        if "forward_ms" in row:
            assert row["forward_spread"] >= 0 and row["fwd_bwd_spread"] >= 0


def test_table_flags_rows_whose_repeats_disagree():
    """The last column: the median repeat against the best; beyond NOISY_SPREAD the row is flagged."""
    from dilate_lab.bench.measure import NOISY_SPREAD, spread

    assert spread([2.0, 1.0, 3.0]) == 1.0  # median 2 against best 1
    assert spread([1.0, 1.0, 5.0]) == 0.0
    base = dict(impl="cpp", layout="s1", forward_ms=1.0, fwd_bwd_ms=2.0, fwd_bwd_peak_mb=1.0)
    quiet = format_table([dict(base, forward_spread=0.04, fwd_bwd_spread=0.1)]).splitlines()[-1]
    noisy = format_table([dict(base, forward_spread=NOISY_SPREAD + 0.1, fwd_bwd_spread=0.1)]).splitlines()[-1]
    assert quiet.endswith("| +4% / +10% |") and "noisy" not in quiet
    assert noisy.endswith("<- noisy |")


def test_naive_is_skipped_where_it_refuses():
    from dilate_lab.bench import Layout

    big = Layout(
        "big", batch=1, height=120, width=120, heads_per_group=1, head_dim=4, dilations=(1,)
    )
    rows = run_benchmark("cpu", impls=["naive"], layouts=[big], repeats=1, threads=1, progress=None)
    naive = next(r for r in rows if r["impl"] == "naive")
    assert "forward_ms" not in naive and "refuses" in naive["skipped"]


def test_scaling_figure():
    rows = run_scaling("cpu", impls=["fused"], sides=(5, 7), quick=True, threads=1, progress=None)
    assert [(r["side"], r["impl"]) for r in rows] == [
        (5, "unfold"),
        (5, "fused"),
        (7, "unfold"),
        (7, "fused"),
    ]
    fig = scaling_figure(rows)
    time_ax, mem_ax = fig.axes
    assert [line.get_label() for line in time_ax.lines] == ["unfold (cpu)", "fused (cpu)"]
    assert list(mem_ax.lines[1].get_xdata()) == [5, 7]


def test_cli_quick_json(tmp_path):
    path = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dilate_lab.bench",
            "--quick",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--impls",
            "fused",
            "--json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    if not torch.cuda.is_available():
        assert "no CUDA device: CPU only" in result.stdout
    assert "| fused | quick1 |" in result.stdout
    assert "quick1 fused: forward" in result.stderr  # a progress line per case
    report = json.loads(path.read_text())
    assert {"torch", "threads", "cuda_device", "rows", "targets"} <= set(report)
    assert "gpu" not in report  # on the CPU the CPU table only, as before the GPU suite
    assert report["threads"] == 1
    assert {r["impl"] for r in report["rows"]} == {"unfold", "fused"}
    for row in report["rows"]:
        assert TIMED_FIELDS <= set(row)


def test_cli_rejects_unknown_impl():
    result = subprocess.run(
        [sys.executable, "-m", "dilate_lab.bench", "--quick", "--impls", "fast_please"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--impls" in result.stderr and "fast_please" in result.stderr


# --------------------------------------------------------------------------- the profiler table
def _tiny_layout():
    from dilate_lab.bench import Layout

    return Layout("tiny", batch=1, height=8, width=8, heads_per_group=1, head_dim=8)


def test_profile_counts_the_operators_each_implementation_must_call():
    """unfold calls im2col twice per group (K and V), its backward col2im as often; fused never does."""
    from dilate_lab.bench import profile_ops

    groups = len(_tiny_layout().dilations)
    unfold = {op.name: op for op in profile_ops("unfold", _tiny_layout(), repeats=2, threads=1)}
    assert unfold["aten::im2col"].calls == 2 * groups
    assert unfold["aten::col2im"].calls == 2 * groups
    forward_only = profile_ops("unfold", _tiny_layout(), backward=False, repeats=2, threads=1)
    forward_only = {op.name: op for op in forward_only}
    assert forward_only["aten::im2col"].calls == 2 * groups
    assert "aten::col2im" not in forward_only

    fused = profile_ops("fused", _tiny_layout(), repeats=2, threads=1)
    names = {op.name: op for op in fused}
    assert "aten::im2col" not in names and "aten::col2im" not in names
    assert names["aten::_softmax"].calls == groups  # one softmax per group, none in the hand-written backward
    assert names["dilate_lab::swda_fused_backward"].calls == groups
    # largest first, shares of one whole
    assert [op.self_ms for op in fused] == sorted((op.self_ms for op in fused), reverse=True)
    assert sum(op.share for op in fused) == pytest.approx(1.0)
    assert all(op.self_ms >= 0 and op.calls >= 1 for op in fused)


def test_format_profile_shows_the_top_rows_and_sums_the_rest():
    from dilate_lab.bench import OpTime, format_profile

    ops = [
        OpTime("aten::bmm", 18, 6.0, 0.6),
        OpTime("aten::copy_", 4, 3.0, 0.3),
        OpTime("aten::add", 2, 1.0, 0.1),
    ]
    lines = format_profile(ops, top=2).splitlines()
    assert lines[0].split() == ["operator", "calls", "self", "ms", "share"]
    assert lines[1].split() == ["aten::bmm", "18", "6.00", "60%"]
    assert lines[3].split() == ["(other:", "1", "operators)", "2", "1.00", "10%"]
    assert lines[4].split() == ["total", "10.00", "100%"]
    assert len(format_profile(ops, top=5).splitlines()) == 1 + 3 + 1  # no "(other)" line
    with pytest.raises(ValueError, match="top"):
        format_profile(ops, top=0)


def test_profile_rejects_bad_arguments():
    from dilate_lab.bench import profile_ops

    with pytest.raises(ValueError, match="impl must be one of .*'fused'.*got 'fastest'"):
        profile_ops("fastest", _tiny_layout())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="impl='flex' does not run on cpu"):
            profile_ops("flex", _tiny_layout())
    with pytest.raises(ValueError, match="repeats"):
        profile_ops("fused", _tiny_layout(), repeats=0)


def test_the_benchmark_tables_do_not_load_matplotlib():
    """matplotlib is for the scaling figure only: importing the benchmark and running its
    command line without --plot must not load it (a practitioner's install may lack it)."""
    code = (
        "import sys, dilate_lab.bench as b; "
        "b.main(['--quick', '--device', 'cpu', '--impls', 'fused', '--threads', '1', '--repeats', '1']); "
        "assert 'matplotlib' not in sys.modules, 'matplotlib was loaded'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| fused | quick1 |" in result.stdout


# --------------------------------------------------------------------------- the GPU suite
# Same code path as on CUDA, run on the CPU with the implementations that run here;
# the verdicts are checked on fake measurements, which pass or fail each target.
def test_gpu_layouts_are_the_stages_and_two_large_maps():
    from dilate_lab.bench.cases import GPU_LAYOUTS, LAYOUTS

    assert [layout.name for layout in GPU_LAYOUTS] == ["stage1", "stage2", "128x128", "256x256"]
    stage1 = LAYOUTS[0]
    for layout, side in zip(GPU_LAYOUTS[2:], (128, 256)):
        assert (layout.height, layout.width) == (side, side)
        assert (layout.batch, layout.heads_per_group, layout.head_dim, layout.dilations) == (
            stage1.batch,
            stage1.heads_per_group,
            stage1.head_dim,
            stage1.dilations,
        )


@pytest.fixture(scope="module")
def gpu_quick():
    from dilate_lab.bench.gpu import run_gpu_benchmark

    # 1 GB/s stated, not measured: the floor column is then known exactly
    return run_gpu_benchmark("cpu", impls=["fused"], quick=True, bandwidth=1e9, progress=None)


def test_gpu_suite_rows_and_floor_on_cpu(gpu_quick):
    from dilate_lab.bench.cases import QUICK_GPU_LAYOUTS

    rows = gpu_quick["rows"]
    assert gpu_quick["copy_bandwidth_gbs"] == pytest.approx(1.0)
    assert [(r["layout"], r["dtype"], r["impl"]) for r in rows] == [
        (layout.name, dtype, impl)
        for layout in QUICK_GPU_LAYOUTS
        for dtype in ("float32", "bfloat16")
        for impl in ("fused", "unfold")  # triton and flex do not run on this CPU: left out
    ]
    for row, layout in zip(rows[::4], QUICK_GPU_LAYOUTS):
        elements = layout.batch * 3 * layout.heads_per_group * layout.height * layout.width * 8
        # forward: q, k, v read and out written, 4 bytes each in float32, over 1e9 B/s
        assert row["floor_forward_ms"] == pytest.approx(4 * elements * 4 / 1e9 * 1e3)
    for row in rows:
        assert row["forward_ms"] > 0 and row["fwd_bwd_ms"] > 0 and row["fwd_bwd_peak_mb"] > 0
        assert row["forward_device_ms"] is None  # no device profiler on the CPU: wall time used
        assert row["floor_fwd_bwd_ms"] == pytest.approx(3 * row["floor_forward_ms"])  # 12 vs 4
        assert row["forward_vs_floor"] == pytest.approx(row["forward_ms"] / row["floor_forward_ms"])
        assert row["fwd_bwd_vs_flex"] is None  # flex not in the run
        same = {r["impl"]: r for r in rows if (r["layout"], r["dtype"]) == (row["layout"], row["dtype"])}
        assert row["fwd_bwd_vs_unfold"] == pytest.approx(same["unfold"]["fwd_bwd_ms"] / row["fwd_bwd_ms"])
    halves = [r["floor_forward_ms"] for r in rows if r["dtype"] == "bfloat16"]
    assert halves == pytest.approx([r["floor_forward_ms"] / 2 for r in rows if r["dtype"] == "float32"])


def _fake_rows(vs_floor: float, fb_vs_floor: float, flex_x: float, unfold_x: float, dtype="bfloat16"):
    """Measured-looking rows of one stage-1 case: triton at ``vs_floor`` times its forward floor
    and ``fb_vs_floor`` its forward+backward floor; flex and unfold ``flex_x``, ``unfold_x`` slower."""
    from dilate_lab.bench.gpu import add_gpu_ratios

    floor, fb_floor = 1.0, 3.0
    rows = []
    for impl, slower in (("triton", 1.0), ("flex", flex_x), ("unfold", unfold_x)):
        fwd, fb = vs_floor * floor * slower, fb_vs_floor * fb_floor * slower
        rows.append(
            {
                "impl": impl, "layout": "stage1", "dtype": dtype,
                # wall times 10x the device times: the ratios must use the device times
                "forward_ms": 10 * fwd, "fwd_bwd_ms": 10 * fb,
                "forward_device_ms": fwd, "fwd_bwd_device_ms": fb,
                "floor_forward_ms": floor, "floor_fwd_bwd_ms": fb_floor,
            }
        )
    add_gpu_ratios(rows)
    return rows


def test_gpu_targets_pass_and_fail_on_fake_measurements():
    from dilate_lab.bench.gpu import GPU_TARGETS, check_gpu_targets, format_gpu_targets

    good = check_gpu_targets(_fake_rows(1.4, 2.9, 10.5, 21.0))
    assert {t["target"] for t in good} == {spec["target"] for spec in GPU_TARGETS}
    assert all(t["met"] is True and t["impl"] == "triton" for t in good)
    values = {t["target"]: t["value"] for t in good}
    assert values["forward_vs_floor"] == pytest.approx(1.4)
    assert values["fwd_bwd_vs_floor"] == pytest.approx(2.9)
    assert values["fwd_bwd_vs_flex"] == pytest.approx(10.5)
    assert values["forward_vs_unfold"] == pytest.approx(21.0)
    assert all(line.endswith("-> met") for line in format_gpu_targets(good).splitlines())

    bad = check_gpu_targets(_fake_rows(1.6, 3.1, 9.5, 19.0))  # each just past its goal
    assert len(bad) == len(GPU_TARGETS) and all(t["met"] is False for t in bad)
    lines = format_gpu_targets(bad).splitlines()
    assert len(lines) == len(GPU_TARGETS) and all(line.endswith("MISSED (1 of 1)") for line in lines)

    # no flex in the run: its targets are not measured, the others still judged
    no_flex = [r for r in _fake_rows(1.4, 2.9, 10.5, 21.0) if r["impl"] != "flex"]
    from dilate_lab.bench.gpu import add_gpu_ratios

    add_gpu_ratios(no_flex)
    verdicts = {t["target"]: t["met"] for t in check_gpu_targets(no_flex)}
    assert verdicts["forward_vs_flex"] is None and verdicts["forward_vs_unfold"] is True
    assert "not measured" in format_gpu_targets(check_gpu_targets(no_flex))

    # the floor targets are about stage 1 in bfloat16: a float32 row is held to the speed-ups only
    fp32 = check_gpu_targets(_fake_rows(5.0, 9.0, 10.5, 21.0, dtype="float32"))
    assert {t["target"] for t in fp32} == {
        "forward_vs_flex", "fwd_bwd_vs_flex", "forward_vs_unfold", "fwd_bwd_vs_unfold"
    }
    assert all(t["met"] for t in fp32)


def test_timing_and_bandwidth_helpers_on_cpu():
    from dilate_lab.bench.measure import copy_bandwidth, device_busy_ms, timed_calls_ms

    calls = []
    assert timed_calls_ms(lambda: calls.append(1), "cpu", calls=5) >= 0
    assert len(calls) == 5
    assert device_busy_ms(lambda: None, "cpu") is None  # no device profiler off CUDA
    assert copy_bandwidth("cpu", 2**22, repeats=3) > 1e7  # bytes/s: a 4 MiB copy, read + write


def test_cli_gpu_suite_on_cpu_json(tmp_path):
    path = tmp_path / "gpu.json"
    command = [sys.executable, "-m", "dilate_lab.bench", "--device", "cpu", "--suite", "gpu",
               "--quick", "--threads", "1", "--impls", "fused", "--dtype", "bfloat16",
               "--json", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "## GPU suite on cpu" in result.stdout and "copy bandwidth" in result.stdout
    assert "| quick1 | bfloat16 | fused |" in result.stdout
    assert "| quick1 | float32 |" not in result.stdout  # --dtype bfloat16 only
    report = json.loads(path.read_text())
    assert report["rows"] == []  # the CPU table did not run
    (gpu,) = report["gpu"]
    assert gpu["device"] == "cpu" and gpu["copy_bandwidth_gbs"] > 0
    assert {(r["impl"], r["dtype"]) for r in gpu["rows"]} == {("fused", "bfloat16"), ("unfold", "bfloat16")}
    assert gpu["targets"] == []  # no triton on this CPU
    assert gpu["table"].splitlines()[0].startswith("| layout | dtype | implementation |")
    assert gpu["table"] in result.stdout


def test_cli_rejects_unknown_dtype():
    command = [sys.executable, "-m", "dilate_lab.bench", "--quick", "--dtype", "float8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--dtype" in result.stderr
