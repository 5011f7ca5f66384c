"""One small Bokeh figure per metric (its own y axis: loss and accuracy never share one): a
line per run in the run's colour, a marker where each checkpoint was saved, a star on those
kept as best, and a ring on the selected checkpoint. Clicking a marker calls ``on_pick`` with
its checkpoint id. Metric and run names are drawn on the canvas and hover values are inserted
as text, so they are never HTML.

:class:`MetricPlot` updates its data sources in place when only the data changed (a new
checkpoint, more history, another smoothing), so a live page keeps its figures and zoom; a new
x axis or log scale needs new figures (Bokeh fixes axis types when a figure is made).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bokeh.models import ColumnDataSource, HoverTool, TapTool
from bokeh.palettes import Category10
from bokeh.plotting import figure

__all__ = ["MetricPlot", "run_colors"]

Columns = dict[str, list[Any]]
PLOT_HEIGHT = 230
_HOVER = [("checkpoint", "@id"), ("run", "@run"), ("step", "@step"), ("value", "@y"),
          ("status", "@status")]
_PALETTE = Category10[10]


def run_colors(runs: Sequence[str]) -> dict[str, str]:
    """A colour per run, the same on every metric's plot."""
    return {run: _PALETTE[k % len(_PALETTE)] for k, run in enumerate(runs)}


def _marks(data: dict[str, Any], colors: dict[str, str]) -> Columns:
    marks = dict(data["marks"])
    marks["color"] = [colors.get(r, "#444") for r in marks["run"]]
    return marks


def _subset(columns: Columns, keep: Sequence[bool]) -> Columns:
    return {k: [v for v, b in zip(vals, keep, strict=True) if b] for k, vals in columns.items()}


class MetricPlot:
    """The figure of one metric over the plotted runs, and the data sources behind it."""

    def __init__(self, metric: str, data: dict[str, Any], runs: Sequence[str], *,
                 x_axis: str = "step", log: bool = False, selected: str = "",
                 on_pick: Callable[[str], None] | None = None) -> None:
        self.metric, self.x_axis, self.log = metric, x_axis, log
        self.colors = run_colors(runs)
        self.on_pick = on_pick
        self.lines = {run: ColumnDataSource(cols) for run, cols in data["lines"].items()}
        marks = _marks(data, self.colors)
        self.marks = ColumnDataSource(marks)
        self.best = ColumnDataSource(_subset(marks, marks["best"]))
        self.ring = ColumnDataSource({"x": [], "y": []})
        self.figure = self._figure(data["dropped"])
        self.highlight(selected)

    def _figure(self, dropped: int) -> Any:
        title = self.metric + (f"  ({dropped} values <= 0 not drawn)" if dropped else "")
        fig = figure(height=PLOT_HEIGHT, sizing_mode="stretch_width", min_width=280,
                     title=title, x_axis_label="step" if self.x_axis == "step" else "time",
                     x_axis_type="datetime" if self.x_axis == "time" else "linear",
                     y_axis_type="log" if self.log else "linear",
                     tools="pan,wheel_zoom,box_zoom,reset,save", toolbar_location="right")
        heading: Any = fig.title
        heading.text_font_size = "12px"
        for run, source in self.lines.items():
            color = self.colors.get(run, "#444")
            if any(r != s for r, s in zip(source.data["raw"], source.data["y"], strict=True)):
                fig.line("x", "raw", source=source, color=color, line_width=1, alpha=0.25)
            fig.line("x", "y", source=source, color=color, line_width=2, legend_label=run)
        marks = fig.scatter("x", "y", source=self.marks, size=9, color="color",
                            nonselection_alpha=1.0, selection_alpha=1.0)
        best = fig.scatter("x", "y", source=self.best, marker="star", size=17,
                           fill_color="gold", line_color="black", nonselection_alpha=1.0,
                           selection_alpha=1.0)
        fig.scatter("x", "y", source=self.ring, size=22, fill_alpha=0, line_color="crimson",
                    line_width=3)
        fig.add_tools(HoverTool(renderers=[marks, best], tooltips=_HOVER),
                      TapTool(renderers=[marks, best]))
        for source in (self.marks, self.best):
            source.selected.on_change("indices", self._picked(source))
        legend: Any = fig.legend
        if legend:
            legend.click_policy = "hide"
            legend.location = "top_right"
            legend.label_text_font_size = "11px"
            legend.background_fill_alpha = 0.6
            legend.padding, legend.spacing = 2, 0
        return fig

    def _picked(self, source: ColumnDataSource) -> Callable[[str, Any, Any], None]:
        def picked(_attr: str, _old: Any, new: Any) -> None:
            if not new:
                return
            ckpt = source.data["id"][new[0]]
            source.selected.indices = []  # a second click on the same marker picks it again
            if self.on_pick is not None:
                self.on_pick(ckpt)
        return picked

    def highlight(self, ckpt_id: str) -> None:
        """Ring the selected checkpoint's marker (nothing when it is not on this plot)."""
        data = self.marks.data
        at = [k for k, i in enumerate(data["id"]) if i == ckpt_id]
        ring = {"x": [data["x"][k] for k in at], "y": [data["y"][k] for k in at]}
        if self.ring.data != ring:
            self.ring.data = ring

    def update(self, data: dict[str, Any], selected: str = "") -> bool:
        """Put new data into the same figure; ``False`` when its shape changed (another run,
        a smoothed line where there was none): then build a new MetricPlot."""
        if data["lines"].keys() != self.lines.keys():
            return False
        for run, cols in data["lines"].items():
            old = self.lines[run].data
            if (old["raw"] == old["y"]) != (cols["raw"] == cols["y"]):
                return False  # the faint raw line comes or goes with smoothing
        for run, cols in data["lines"].items():
            if self.lines[run].data != cols:
                self.lines[run].data = cols
        marks = _marks(data, self.colors)
        if self.marks.data != marks:
            self.marks.data = marks
            self.best.data = _subset(marks, marks["best"])
        self.highlight(selected)
        return True

