"""The machinery behind the course's exercises: check, hint, solution.

An exercise is checked with ``ex.check(answer)``, which prints one of three
kinds of feedback (the learntools model):

- *not attempted yet*: the answer is still the blank template (``None``, ``...``,
  or a function that returns ``None`` or raises ``NotImplementedError``);
- *incorrect*: a specific message: wrong type or shape (and the expected one),
  the first mismatching position and both values, a gradient that does not flow,
  a dilation that is ignored ...;
- *correct*.

``ex.hint()`` prints a hint, ``ex.solution()`` prints a worked solution. The
checking itself lives in ``ex.evaluate(answer)``, which returns a ``Feedback``
and prints nothing, so that tests can assert on it.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = [
    "as_whole_number",
    "Feedback",
    "Exercise",
    "NotAttempted",
    "Incorrect",
    "compare",
    "first_mismatch",
    "is_blank",
]

NOT_ATTEMPTED = "not attempted"
INCORRECT = "incorrect"
CORRECT = "correct"

_MARKS = {NOT_ATTEMPTED: "[ ] Not attempted yet", INCORRECT: "[x] Incorrect", CORRECT: "[v] Correct"}


@dataclass(frozen=True)
class Feedback:
    status: str  # "not attempted", "incorrect" or "correct"
    message: str

    @property
    def correct(self) -> bool:
        return self.status == CORRECT

    def __str__(self) -> str:
        return f"{_MARKS[self.status]}: {self.message}"


class NotAttempted(Exception):
    """Raised by a check to report that the answer is still the blank template."""


class Incorrect(Exception):
    """Raised by a check with the specific reason an answer is wrong."""


def is_blank(answer) -> bool:
    """True for the values a blank template leaves: None and Ellipsis."""
    return answer is None or answer is Ellipsis


_LIBRARY_DIRS = tuple(
    os.path.dirname(os.path.abspath(module.__file__)) + os.sep for module in (torch, sys.modules[__package__])
)


def _is_learner_code(filename: str) -> bool:
    """True for frames outside torch and dilate_lab: the learner's own lines."""
    return not os.path.abspath(filename).startswith(_LIBRARY_DIRS)


def call_answer(fn: Callable, *args, **kwargs):
    """Call a learner's function; blank templates become NotAttempted, crashes become Incorrect."""
    if is_blank(fn):
        raise NotAttempted("the answer is still empty.")
    if not callable(fn):
        raise Incorrect(f"expected a function, got {type(fn).__name__}.")
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        raise NotAttempted("your function still raises NotImplementedError.") from None
    except Exception as error:  # the learner's own bug: report it, do not crash the notebook
        frames = [f for f in traceback.extract_tb(error.__traceback__) if _is_learner_code(f.filename)]
        where = ""
        if frames:
            line = (frames[-1].line or "").strip()
            where = f" (line {frames[-1].lineno}: {line})" if line else f" (line {frames[-1].lineno})"
        raise Incorrect(
            f"your function raised {type(error).__name__}: {error}{where}"
        ) from None
    if is_blank(result):
        raise NotAttempted("your function returns None: fill in the body and return the result.")
    return result


def as_whole_number(value, what: str) -> int:
    """``value`` as an int, whatever numeric type carries it; ``what`` names it in messages.

    A count worked out by a learner may arrive as 9, as 9.0 (after a ``/``), as
    ``np.int64(9)`` (from numpy) or as ``tensor(9)`` (from torch): the same number, so
    every exercise that asks for one accepts them alike. Refused, each with its own
    message: a bool (True is not a count), a value with a fractional part (``9.5``), a
    tensor or array of more than one element, and anything that is not a real number.
    """
    number = value
    if isinstance(number, (torch.Tensor, np.ndarray)):
        size = number.numel() if isinstance(number, torch.Tensor) else number.size
        if size != 1:
            raise Incorrect(
                f"{what} is a {type(value).__name__} of shape {tuple(number.shape)}, expected one number."
            )
        number = number.item()
    elif isinstance(number, np.generic):
        number = number.item()
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise Incorrect(f"{what} is {type(value).__name__} {value!r}, expected a number.")
    if not math.isfinite(number) or number != math.floor(number):
        raise Incorrect(
            f"{what} is {number!r}, not a whole number, and a count of pixels or scores is one. "
            "Did a / (which always gives a float) or a square root leave a fraction behind?"
        )
    return int(number)


def first_mismatch(yours: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float):
    """Index of the first element where the tensors differ beyond tolerance, or None."""
    bad = ~torch.isclose(yours, expected, atol=atol, rtol=rtol, equal_nan=False)
    if not bad.any():
        return None
    return tuple(int(i) for i in bad.nonzero()[0])


def compare(
    yours, expected: torch.Tensor, name: str = "output", atol: float = 1e-5, rtol: float = 1e-4
) -> None:
    """Raise Incorrect with a precise message unless ``yours`` matches ``expected``."""
    if not isinstance(yours, torch.Tensor):
        raise Incorrect(
            f"your {name} is a {type(yours).__name__}, expected a torch.Tensor "
            f"of shape {tuple(expected.shape)}."
        )
    if yours.shape != expected.shape:
        raise Incorrect(
            f"your {name} has shape {tuple(yours.shape)}, expected {tuple(expected.shape)}."
        )
    yours = yours.detach().to(device=expected.device, dtype=expected.dtype)
    index = first_mismatch(yours, expected, atol, rtol)
    if index is not None:
        diff = (yours - expected).abs().max().item()
        raise Incorrect(
            f"your {name} differs first at index {index}: yours {yours[index].item():.6g}, "
            f"expected {expected[index].item():.6g} (largest difference {diff:.3g})."
        )


@contextlib.contextmanager
def _one_thread():
    """Run a check on one CPU thread, then give torch its threads back.

    A check works on tensors of a few hundred numbers, thousands of times (a learner's
    loop over pixels): threads cannot speed that up, and on a busy machine every
    operator then waits for a pool of threads to meet, which made a loop answer's
    check some 30 times slower (seconds instead of a tenth of one).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Exercise:
    """One exercise: a check function plus hints and a solution to print on request.

    ``check_fn(answer)`` raises ``NotAttempted`` or ``Incorrect`` with a message,
    or returns a confirmation message when the answer is right.
    """

    def __init__(
        self,
        title: str,
        check_fn: Callable[[object], str],
        hints: list[str],
        solution: str,
    ):
        self.title = title
        self._check_fn = check_fn
        self._hints = list(hints)
        self._solution = solution

    def evaluate(self, answer) -> Feedback:
        try:
            with _one_thread():
                message = self._check_fn(answer)
        except NotAttempted as reason:
            return Feedback(NOT_ATTEMPTED, f"{reason} {self._nudge()}")
        except Incorrect as reason:
            return Feedback(INCORRECT, str(reason))
        return Feedback(CORRECT, message)

    def check(self, answer) -> None:
        """Print feedback on ``answer``."""
        print(self.evaluate(answer))

    def hint(self, n: int = 1) -> None:
        """Print hint number ``n`` (1-based)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self._hints):
            raise ValueError(f"n must be an int from 1 to {len(self._hints)}, got {n!r}")
        more = f" (more: .hint({n + 1}))" if n < len(self._hints) else ""
        print(f"Hint {n}/{len(self._hints)}{more}: {self._hints[n - 1]}")

    def solution(self) -> None:
        """Print a worked solution."""
        print(f"Solution: {self.title}\n\n{self._solution.strip()}")

    def _nudge(self) -> str:
        return "Write your answer, then run this check again (stuck? .hint())."

    def __repr__(self) -> str:
        return f"<Exercise: {self.title}; use .check(answer), .hint(), .solution()>"
