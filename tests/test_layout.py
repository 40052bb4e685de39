"""The package's layout: imports point one way, and the library stays light.

- No import circle anywhere in ``dilate_lab`` (imports inside functions included, so a
  circle cannot be hidden by importing late).
- The library never imports the course; ``ops`` never imports ``functional`` or ``nn``;
  ``functional`` never imports ``nn``.
- ``import dilate_lab`` loads torch, not matplotlib, ipywidgets or scikit-learn.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dilate_lab"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of a (possibly relative) ``from ... import`` source."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str) -> set[str]:
    """The dilate_lab modules ``name`` imports, at module level or inside functions."""
    path = MODULES[name]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, path.name == "__init__.py", node.level, node.module)
            # "from pkg import sub" imports the submodule pkg.sub when there is one
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_no_import_circle():
    state: dict[str, str] = {}  # "open" while on the path, "done" when finished

    def visit(name, path):
        state[name] = "open"
        for target in sorted(GRAPH[name]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("dilate_lab.ops", ("dilate_lab.functional", "dilate_lab.nn", "dilate_lab.course")),
        ("dilate_lab.functional", ("dilate_lab.nn", "dilate_lab.course")),
        ("dilate_lab.nn", ("dilate_lab.course",)),
        ("dilate_lab.geometry", ("dilate_lab.course",)),
        ("dilate_lab.flops", ("dilate_lab.course",)),
        ("dilate_lab.bench", ("dilate_lab.course",)),
    ],
)
def test_dependencies_point_one_way(layer, forbidden):
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name == layer or name.startswith(layer + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]
    assert not wrong, "; ".join(wrong)


def test_import_dilate_lab_loads_torch_only():
    code = (
        "import sys, dilate_lab\n"
        "heavy = [m for m in ('matplotlib', 'ipywidgets', 'sklearn', 'timm', 'triton', 'dilate_lab.course')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import dilate_lab also imported: {result.stdout.strip()}"


def test_course_names_still_import_from_the_top():
    """The public names lessons use (figures, data, explorers) load on first use."""
    import dilate_lab

    for name in ("plot_receptive_field", "load_sample_image", "trace_msda_shapes", "build_model"):
        assert callable(getattr(dilate_lab, name))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        dilate_lab.not_a_name  # noqa: B018


def test_no_module_is_a_wall_of_code():
    too_long = {
        name: len(path.read_text().splitlines())
        for name, path in MODULES.items()
        if len(path.read_text().splitlines()) > 520
    }
    assert not too_long, f"modules over ~500 lines: {too_long}"
