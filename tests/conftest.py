"""Shared test set-up: tests parametrized with impl="cpp" need the compiled kernel."""

import pytest

from compiled import compiled_or_skip


@pytest.fixture(autouse=True)
def _compiled_kernel_for_cpp(request):
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("impl") == "cpp":
        compiled_or_skip()
