"""The controls the explorers are built from, and the parsing of what a learner types.

Every control gets a stable CSS class (``dl-<control>``) so that a browser test
can find it; the descriptions are 80 px wide so that the controls of an
explorer line up.
"""

from __future__ import annotations

import ipywidgets as widgets

__all__ = ["parse_dilations"]


def parse_dilations(text: str, name: str = "dilations", max_count: int = 8, max_dilation: int = 8) -> tuple[int, ...]:
    """'1, 2, 3' -> (1, 2, 3), for the text boxes where a learner types a dilation schedule."""
    parts = [part.strip() for part in str(text).replace(";", ",").split(",") if part.strip()]
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(f"{name} must be ints separated by commas, e.g. 1, 2, 3; got {text!r}") from None
    if not values:
        raise ValueError(f"{name} must name at least one dilation, e.g. 1, 2, 3; got {text!r}")
    if len(values) > max_count:
        raise ValueError(f"{name}: at most {max_count} entries here, got {len(values)}")
    if any(not 1 <= r <= max_dilation for r in values):
        raise ValueError(f"{name}: every dilation must be an int in [1, {max_dilation}] here; got {values}")
    return values


def _styled(widget: widgets.Widget, css_class: str) -> widgets.Widget:
    widget.add_class(css_class)
    return widget


def _toggle(options, value, description: str, css_class: str) -> widgets.ToggleButtons:
    buttons = widgets.ToggleButtons(
        options=list(options), value=value, description=description,
        style={"button_width": "42px", "description_width": "80px"},
    )
    return _styled(buttons, css_class)


def _slider(value: int, low: int, high: int, description: str, css_class: str) -> widgets.IntSlider:
    slider = widgets.IntSlider(
        value=value, min=low, max=high, description=description, continuous_update=True,
        style={"description_width": "80px"},
    )
    return _styled(slider, css_class)


def _text(value: str, description: str, css_class: str) -> widgets.Text:
    box = widgets.Text(
        value=value, description=description, continuous_update=False,
        style={"description_width": "80px"}, layout={"width": "260px"},
    )
    return _styled(box, css_class)
