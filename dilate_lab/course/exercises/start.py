"""Lessons 00 and 01's exercises: counting, before any tensor.

In a notebook::

    from dilate_lab.course.exercises import lesson00
    lesson00.span.check(9)        # feedback
    lesson00.span.hint()          # a nudge
    lesson00.span.solution()      # the worked answer

Both answers are numbers a learner works out by hand: the span of a dilated
window, and how many attention scores global and windowed attention compute.
"""

from __future__ import annotations

from types import SimpleNamespace

from ..checking import Exercise, Incorrect, NotAttempted, as_whole_number, call_answer, is_blank

__all__ = ["lesson00", "lesson01"]


def _check_int(answer, expected: int, what: str, wrong_guesses: dict[int, str]) -> None:
    """``answer`` must be the whole number ``expected``, in any numeric type (``as_whole_number``)."""
    if is_blank(answer):
        raise NotAttempted("the answer is still empty.")
    answer = as_whole_number(answer, f"your answer ({what})")
    if answer != expected:
        reason = wrong_guesses.get(answer, "")
        raise Incorrect(f"{answer} is not {what}. {reason}".strip())


# --------------------------------------------------------------------------- lesson 00
def _check_span(answer) -> str:
    _check_int(
        answer,
        expected=(5 - 1) * 2 + 1,
        what="the span of a 5x5 window with dilation 2",
        wrong_guesses={
            5: "That is the kernel size: dilation spreads the same 5 positions further apart.",
            10: "That is 5 * 2: count the pixels from the first window position to the last, "
            "both included, and do not count past the last one.",
            8: "Off by one: count both the first and the last window position.",
            11: "One gap too many: 5 positions have 4 gaps between them, each 2 pixels wide.",
            13: "That would be a 5x5 window with dilation 3.",
            5 * 5: "That is the number of positions in the window (k * k), not its width.",
        },
    )
    return "a 5x5 window with dilation 2 covers pixels -4, -2, 0, +2, +4: 9 pixels from end to end."


lesson00 = SimpleNamespace(
    span=Exercise(
        "the span of a dilated window",
        _check_span,
        hints=[
            "Draw one row of the window: with dilation 2 the positions are -4, -2, 0, +2, +4 around the query.",
            "The span counts every pixel from the leftmost position to the rightmost, both included: "
            "(kernel_size - 1) gaps of dilation pixels, plus one.",
        ],
        solution="span = (5 - 1) * 2 + 1   # = 9: positions -4 ... +4 and the pixels between them",
    )
)


# --------------------------------------------------------------------------- lesson 01
def _check_attention_cost(fn) -> str:
    cases = [(4, 4, None), (7, 5, None), (56, 56, None), (4, 4, 3), (7, 5, 3), (56, 56, 3), (14, 9, 7)]
    for H, W, kernel_size in cases:
        got = as_whole_number(
            call_answer(fn, H, W, kernel_size), f"attention_cost({H}, {W}, kernel_size={kernel_size})"
        )
        n = H * W
        expected = n * n if kernel_size is None else n * kernel_size**2
        if got != expected:
            if kernel_size is None:
                detail = (
                    "global attention scores every query against every key: N = H * W queries, "
                    "N keys each."
                )
            else:
                detail = (
                    "a sliding window scores every query against k * k keys, whatever the dilation "
                    "(zero-padded positions count: they are scored too)."
                )
            raise Incorrect(
                f"attention_cost({H}, {W}, kernel_size={kernel_size}) returned {got!r}, "
                f"expected {expected}: {detail}"
            )
    return (
        "global attention grows as N^2, a sliding window as N * k^2: at 56x56 that is "
        f"{(56 * 56) ** 2:,} scores against {56 * 56 * 9:,}."
    )


lesson01 = SimpleNamespace(
    attention_cost=Exercise(
        "count the attention scores",
        _check_attention_cost,
        hints=[
            "With N = H * W pixels, global attention compares every query with every key.",
            "A k x k window gives each of the N queries exactly k * k scores (border positions "
            "included: the paper zero-pads, so they are computed too).",
        ],
        solution='''
def attention_cost(H, W, kernel_size=None):
    n = H * W
    if kernel_size is None:
        return n * n               # every query against every key
    return n * kernel_size ** 2    # every query against its k x k window
''',
    )
)
