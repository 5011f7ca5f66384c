"""The metric plot of one run (Bokeh): a line per metric over steps, a marker where each
checkpoint was saved, and the checkpoints kept as best highlighted. Metric and run names are
drawn on the canvas and hover values are inserted as text, so they are never HTML.

:class:`RunPlot` updates its data sources in place when only the data changed (a new
checkpoint, more history), so a live page does not rebuild the figure or lose its zoom.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, HoverTool
from bokeh.palettes import Category10
from bokeh.plotting import figure

__all__ = ["RunPlot", "plot_data", "run_figure"]

Columns = dict[str, list[Any]]
_HOVER = [("checkpoint", "@id"), ("step", "@step"), ("value", "@value"), ("status", "@status")]


def plot_data(history: dict[str, Any]) -> dict[tuple[str, str], Columns]:
    """``DashboardModel.history`` as columns: ``(metric, "line" | "saved" | "best")``."""
    marks = history["checkpoints"]
    series = dict(history["series"])
    for mark in marks:  # metrics saved only with checkpoints (no step() history) still show
        for key, value in mark["metrics"].items():
            if key not in history["series"] and value is not None:
                xs, ys = series.setdefault(key, ([], []))
                xs.append(mark["step"])
                ys.append(value)
    out: dict[tuple[str, str], Columns] = {}
    for metric, (xs, ys) in sorted(series.items()):
        order = sorted(range(len(xs)), key=xs.__getitem__)
        out[metric, "line"] = {"step": [xs[j] for j in order], "value": [ys[j] for j in order]}
        saved = _marks_of(metric, marks, xs, ys)
        if saved["step"]:
            out[metric, "saved"] = saved
        best = {key: [v for v, b in zip(vals, saved["kept_best"], strict=True) if b]
                for key, vals in saved.items()}
        if best["step"]:
            out[metric, "best"] = best
    return out


def _marks_of(metric: str, marks: list[dict[str, Any]], xs: list[int], ys: list[float],
              ) -> Columns:
    at_step = dict(zip(xs, ys, strict=True))
    out: Columns = {"step": [], "value": [], "id": [], "status": [], "kept_best": []}
    for mark in marks:
        value = mark["metrics"].get(metric, at_step.get(mark["step"]))
        if value is None:
            continue
        out["step"].append(mark["step"])
        out["value"].append(value)
        out["id"].append(mark["id"])
        out["status"].append(mark["status"])
        out["kept_best"].append(metric in mark.get("best_of", ()))
    return out


class RunPlot:
    """One run's figure and the data sources behind it."""

    def __init__(self, run: str, history: dict[str, Any]) -> None:
        self.run = run
        data = plot_data(history)
        self.sources = {key: ColumnDataSource(columns) for key, columns in data.items()}
        self.figure = self._figure()

    def _figure(self) -> Any:
        fig = figure(height=300, sizing_mode="stretch_width", title=f"run {self.run}",
                     x_axis_label="step", tools="pan,wheel_zoom,box_zoom,reset,save")
        palette = Category10[10]
        metrics = sorted({metric for metric, _ in self.sources})
        hover: list[Any] = []
        for k, metric in enumerate(metrics):
            color = palette[k % len(palette)]
            fig.line("step", "value", source=self.sources[metric, "line"], color=color,
                     line_width=2, legend_label=metric)
            if (metric, "saved") in self.sources:
                hover.append(fig.scatter("step", "value", source=self.sources[metric, "saved"],
                                         size=8, color=color, legend_label=metric))
            if (metric, "best") in self.sources:
                hover.append(fig.scatter("step", "value", source=self.sources[metric, "best"],
                                         marker="star", size=17, fill_color="gold",
                                         line_color="black", legend_label="kept best"))
        if hover:
            fig.add_tools(HoverTool(renderers=hover, tooltips=_HOVER))
        if fig.legend:
            fig.legend.click_policy = "hide"
            fig.legend.location = "top_right"
        return fig

    def update(self, history: dict[str, Any]) -> bool:
        """Put new data into the same figure; ``False`` when its shape changed (another
        metric, a first kept-best marker): then build a new RunPlot."""
        data = plot_data(history)
        if data.keys() != self.sources.keys():
            return False
        for key, columns in data.items():
            if self.sources[key].data != columns:
                self.sources[key].data = columns
        return True


def run_figure(run: str, history: dict[str, Any]) -> Any:
    """The figure of :class:`RunPlot`, for one-off use."""
    return RunPlot(run, history).figure
