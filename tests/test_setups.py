"""The tested set-ups (README, "Tested set-ups"): what CI runs, and stored notebook outputs
that any of those machines reproduces."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_COMMAND = "pip install -r requirements.txt && pytest"

# Text that only one kind of machine prints: a torch build tag, a GPU's name, torch's
# CUDA-less warning, a stream on stderr. A checked cell must never store it.
MACHINE_TEXT = re.compile(
    r"\d+\.\d+\.\d+\+(cpu|cu\d+)|NVIDIA|GeForce|CUDA_HOME|No CUDA runtime|device: cuda"
)


def _checked_cells():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        number = -1
        for cell in notebook["cells"]:
            if cell["cell_type"] != "code":
                continue
            number += 1
            source = "".join(cell["source"])
            tags = set(cell["metadata"].get("tags", []))
            if re.search(r"NBVAL_(IGNORE_OUTPUT|SKIP)", source) or tags & {"nbval-ignore-output", "nbval-skip"}:
                continue
            yield f"{path.name}::Cell {number}", cell["outputs"]


def test_ci_runs_the_readme_test_command_on_every_leg():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert README_COMMAND in readme
    assert [line.strip() for line in ci.splitlines()].count(README_COMMAND) == 1
    for leg in ("a) run_leg a 3.11 cpu 1", "b) run_leg b 3.13 cuda 1", "c) run_leg c 3.11 cpu 0"):
        assert leg in ci
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash to check .ci/run's syntax")
    subprocess.run([bash, "-n", str(ROOT / ".ci" / "run")], check=True)


def test_checked_notebook_outputs_name_no_machine():
    found = []
    for name, outputs in _checked_cells():
        for output in outputs:
            if output.get("name") == "stderr":
                found.append(f"{name}: a stderr stream")
            text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            found += [f"{name}: {match.group()!r}" for match in MACHINE_TEXT.finditer(text)]
    assert not found, "checked cells store machine-specific output:\n" + "\n".join(found)
