"""The course's exercises, one namespace per lesson.

In a notebook::

    from dilate_lab.course.exercises import lesson02
    lesson02.swda_loop.check(my_swda_loop)   # feedback
    lesson02.swda_loop.hint()                # a nudge
    lesson02.swda_loop.solution()            # the worked answer, one call away

One module a lesson or topic: ``start`` (00, 01), ``swda`` (02, 03), ``msda`` (04),
``model`` (05, with ``block``: assemble a DilateBlock), ``speed`` (06), ``training`` (07); what
several of them share is in ``_common``.
"""

from .model import lesson05
from .msda import lesson04
from .start import lesson00, lesson01
from .swda import lesson02, lesson03
from .speed import lesson06
from .training import lesson07

__all__ = ["lesson00", "lesson01", "lesson02", "lesson03", "lesson04", "lesson05", "lesson06", "lesson07"]
