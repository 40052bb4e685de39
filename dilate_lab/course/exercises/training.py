"""Lesson 07's exercise: how many blocks until some token sees both marks?

The long-range task of lesson 07 puts two marks ``distance`` cells apart in a
row; a model can only compare them once some token's receptive field holds
both. ``lesson07.blocks_needed`` asks the learner to count the blocks that
takes for a given set of dilations, and its checker explains each wrong answer
(too few blocks, the gridding holes of dilations that share a factor, the
closed form that only follows mark A's own token).

In a notebook::

    from dilate_lab.course.train import lesson07   # or from this module
    lesson07.blocks_needed.check(blocks_needed)
    lesson07.blocks_needed.hint()
    lesson07.blocks_needed.solution()
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from ..checking import Exercise, Incorrect, NotAttempted, is_blank

__all__ = ["lesson07"]


def _row_steps(dilations) -> set[int]:
    """Offsets one block (kernel 3) moves information by along a row: 0 and +-r per dilation r."""
    return {0} | {s * r for r in dilations for s in (-1, 1)}


def _blocks_needed(distance: int, dilations, limit: int = 64) -> int | None:
    """Fewest blocks after which some token sees two cells ``distance`` apart in a row (brute force).

    One block (kernel 3, no position embedding) moves information by 0 or +-r
    cells for a dilation r of the block; after L blocks a token sees the
    offsets that are sums of L such steps. Two cells d apart are both seen by
    one token iff d is the difference of two offsets it sees.
    """
    steps = _row_steps(dilations)
    reach = {0}
    for blocks in range(1, limit + 1):
        reach = {a + b for a in reach for b in steps}
        if any(a + distance in reach for a in reach):
            return blocks
    return None


_BLOCKS_CASES = (
    (3, (1, 1, 1)), (3, (1, 2, 3)), (6, (1, 2, 3)), (7, (1, 2, 3)), (13, (1, 2, 3)),
    (1, (1,)), (2, (1,)), (5, (1, 1, 1)), (4, (2, 2, 2)), (3, (2, 2, 2)), (6, (3,)),
    (5, (3,)), (9, (2, 3)), (1, (2, 4)), (7, (1, 2, 4)), (6, (1, 4)),
)
"""(distance, dilations) pairs the checker tries. The last two catch the closed form
``ceil(d / (2 * max(r)))``: one (1, 2, 4) block reaches offsets {0, +-1, +-2, +-4},
whose differences include 8 but not 7; one (1, 4) block reaches {0, +-1, +-4}: 8 but not 6."""


def _reachable_offsets(dilations, blocks: int) -> list[int]:
    """Offsets along a row that a token sees after ``blocks`` blocks (sums of steps 0, +-r)."""
    steps = _row_steps(dilations)
    reach = {0}
    for _ in range(blocks):
        reach = {a + b for a in reach for b in steps}
    return sorted(reach)


def _call_blocks_needed(fn, distance, dilations):
    """The learner's answer for one case; None is a legitimate answer here ("never")."""
    try:
        answer = fn(distance, dilations)
    except NotImplementedError:
        raise NotAttempted("blocks_needed still raises NotImplementedError.") from None
    except Exception as error:  # the learner's bug: report it, do not crash the notebook
        raise Incorrect(
            f"blocks_needed({distance}, {dilations}) raised {type(error).__name__}: {error}"
        ) from None
    if answer is Ellipsis:
        raise NotAttempted("blocks_needed returns ...: fill in the body.")
    return answer


def _check_blocks_needed(fn) -> str:
    if is_blank(fn):
        raise NotAttempted("blocks_needed is still the template.")
    if not callable(fn):
        raise Incorrect(f"expected a function blocks_needed(distance, dilations), got {type(fn).__name__}.")
    for distance, dilations in _BLOCKS_CASES:
        expected = _blocks_needed(distance, dilations)
        answer = _call_blocks_needed(fn, distance, dilations)
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, int)):
            raise Incorrect(
                f"blocks_needed({distance}, {dilations}) returned {answer!r}: expected an int "
                "(a number of blocks) or None (no number of blocks is enough)."
            )
        if answer == expected:
            continue
        call = f"blocks_needed({distance}, {dilations})"
        if expected is None:
            raise Incorrect(
                f"{call} returned {answer}, but no number of blocks is enough: every step is a "
                f"multiple of {math.gcd(*dilations)} cells, and {distance} is not. Dilated layers "
                "that share a factor leave holes (the 'gridding' effect); mixing dilations fills them."
            )
        if answer is None:
            raise Incorrect(f"{call} returned None, but {expected} block(s) are enough.")
        if 0 < answer < expected:
            offsets = _reachable_offsets(dilations, answer)
            shown = offsets if len(offsets) <= 15 else f"{offsets[:7]} ... {offsets[-7:]}"
            raise Incorrect(
                f"{call} returned {answer}, but after {answer} block(s) a token sees the offsets "
                f"{shown} along the row, and no two of them are {distance} apart. "
                "How far the offsets spread is not enough: the distance itself must be a "
                f"difference of two reachable offsets. {expected} block(s) are needed."
            )
        if answer == -(-distance // max(dilations)) and answer > expected:
            raise Incorrect(
                f"{call} returned {answer}: that many blocks let mark A's own token reach mark B. "
                f"But a token between the marks can see both sooner: {expected} block(s) suffice."
            )
        raise Incorrect(f"{call} returned {answer}, expected {expected}.")
    return (
        "every case matches. One (1, 2, 3) block sees cells 3 apart; (1, 1, 1) blocks need 2, "
        "and all-even dilations never see odd distances."
    )


lesson07 = SimpleNamespace(
    blocks_needed=Exercise(
        "blocks_needed(distance, dilations): how many blocks until some token sees both marks?",
        _check_blocks_needed,
        hints=[
            "Think in one dimension, along the row of the two marks. One block lets a token "
            "take in cells 0 or +-r away, for each dilation r of its heads; a second block "
            "adds another such step.",
            "After L blocks a token sees the offsets you can write as a sum of L steps from "
            "{0, +-r1, +-r2, ...}. The token need not sit on a mark: cells d apart are both "
            "seen iff d = (one reachable offset) - (another).",
            "Build the set of reachable offsets block by block (a Python set) and stop at the "
            "first L where some pair differs by d. If every dilation shares a factor that d "
            "lacks, no L works: return None (stop after, say, 64 blocks).",
        ],
        solution="""
def blocks_needed(distance, dilations):
    steps = {0} | {s * r for r in dilations for s in (-1, 1)}
    reach = {0}                        # offsets a token sees, after 0 blocks: itself
    for blocks in range(1, 65):
        reach = {a + b for a in reach for b in steps}
        if any(a + distance in reach for a in reach):
            return blocks              # some token sees cells a and a + distance
    return None                        # a shared factor of the dilations: never

# blocks_needed(3, (1, 1, 1)) == 2, blocks_needed(3, (1, 2, 3)) == 1,
# blocks_needed(3, (2, 2, 2)) is None
""",
    )
)
"""Lesson 07's exercise, in the form of the other lessons' exercises (``dilate_lab.course.exercises``):
``lesson07.blocks_needed.check(fn)``, ``.hint()``, ``.solution()``."""

