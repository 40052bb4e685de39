"""The compiled "cpp" kernel in tests: skip where it cannot be built, unless CI requires it."""

import os

import pytest

from dilate_lab.ops.cpp_build import build_error, compiled_available

REQUIRED = os.environ.get("DILATE_LAB_REQUIRE_COMPILED") == "1"


def compiled_or_skip() -> None:
    """Builds the kernel on first use (about half a minute); skips, or fails in CI, without it."""
    if compiled_available():
        return
    message = f"the C++ SWDA kernel is not available here: {build_error()}"
    if REQUIRED:
        pytest.fail(message + " (DILATE_LAB_REQUIRE_COMPILED=1)")
    pytest.skip(message)
