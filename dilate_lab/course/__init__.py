"""The course built on the library: everything a lesson needs beyond the attention itself.

- ``figures``: each figure as a function that computes and a function that draws.
- ``explorers``: the browser-native window explorers (anywidget: traitlets + one ES module each).
- ``widgets``: the tensor explorers (ipywidgets over the figures); ``widget_timing`` times them.
- ``exercises``: one namespace per lesson (``check``, ``hint``, ``solution``), built on ``checking``.
- ``bugs``: the deliberately wrong MSDA modules that circulate (lesson 04); ``annotated_msda``:
  the official MSDA forward restated step by step beside the paper (lesson 04).
- ``data``, ``images``: digits, the long-range task, the sample photograph (all offline).
- ``small_models``, ``train``: the small DilateFormers of lesson 07 and their training loop;
  ``payoff`` (lesson 00's first model), ``trained_attention`` and ``block_classifier`` (lesson 05).
- ``lesson_times``: each lesson's run time against the one it states (``pytest_lesson_times``
  applies it to the test suite's nbval runs); ``static_site``: the course as HTML pages.
- ``shapes``, ``cost``: the shape tracer and the global-vs-window cost measurements.

Depends on the library (``dilate_lab``), never the other way round; needs matplotlib,
and ipywidgets and scikit-learn where a lesson uses them.
"""
