"""The course's exercises, one namespace per lesson.

In a notebook::

    from dilate_lab.course.exercises import lesson02
    lesson02.swda_loop.check(my_swda_loop)   # feedback
    lesson02.swda_loop.hint()                # a nudge
    lesson02.swda_loop.solution()            # the worked answer, one call away
"""

from ._all import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05
from .speed import lesson06

__all__ = ["lesson00", "lesson01", "lesson02", "lesson03", "lesson04", "lesson05", "lesson06"]
