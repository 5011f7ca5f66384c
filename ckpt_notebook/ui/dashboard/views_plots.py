"""The Metrics section: its controls (which runs side by side, step or wall-clock x axis, log
scale, smoothing) bound to the :class:`DashboardModel`'s parameters, and one small plot per
metric (:class:`.plots.MetricPlot`) whose checkpoint markers select a checkpoint when clicked.

Reading history happens off the UI thread where it can (the store watcher calls
:meth:`MetricsView.data` there and hands the result to :meth:`MetricsView.show`).
"""

from __future__ import annotations

import html
from typing import Any

import panel as pn

from .model import DashboardModel
from .plots import MetricPlot
from .widgets import UiLoop, label, text_pane, wrap_row

__all__ = ["MetricsView"]

X_LABELS = {"step": "step", "time": "wall clock"}
MAX_PLOTTED_RUNS = 8
PLOT_FLEX = "1 1 340px"  # two or three plots a row on a wide page, one in a narrow cell


def _choices(runs: list[str]) -> dict[str, str]:
    """Run names as the chooser's labels, escaped: Choices.js puts labels in as HTML."""
    return {html.escape(r): r for r in runs}


class MetricsView:
    """Controls and plots of the Metrics card; :attr:`panel` is the card's content."""

    def __init__(self, model: DashboardModel, loop: UiLoop) -> None:
        self.model, self.loop = model, loop
        self.plots: dict[str, MetricPlot] = {}
        self._shape: tuple[Any, ...] = ()
        self.runs = pn.widgets.MultiChoice(**label("Runs side by side"),
                                           options=_choices(model.runs),
                                           value=model.plotted_runs(), width=320,
                                           max_items=MAX_PLOTTED_RUNS)
        self.x_axis = pn.widgets.RadioButtonGroup(options={v: k for k, v in X_LABELS.items()},
                                                  value=model.x_axis, align="end")
        self.log = pn.widgets.Checkbox(**label("log y"), value=model.log_scale, align="end")
        self.smoothing = pn.widgets.FloatSlider(**label("Smoothing"), start=0.0, end=0.99,
                                                step=0.01, value=model.smoothing, width=180)
        self.note = text_pane("", sizing_mode="stretch_width")
        self.grid = pn.FlexBox(flex_wrap="wrap", sizing_mode="stretch_width")
        self.panel = pn.Column(
            wrap_row(self.runs, self.x_axis, self.log, self.smoothing), self.note, self.grid,
            sizing_mode="stretch_width")
        self.runs.param.watch(lambda e: setattr(model, "plot_runs", list(e.new)), "value")
        self.x_axis.param.watch(lambda e: setattr(model, "x_axis", e.new), "value")
        self.log.param.watch(lambda e: setattr(model, "log_scale", bool(e.new)), "value")
        self.smoothing.param.watch(lambda e: setattr(model, "smoothing", float(e.new)),
                                   "value_throttled")

    def sync_controls(self) -> None:
        """The run choices follow the store's runs and the run filter (UI thread)."""
        m = self.model
        if self.runs.options != _choices(m.runs):
            self.runs.options = _choices(m.runs)
        plotted = m.plotted_runs()
        if list(self.runs.value) != plotted:
            self.runs.value = plotted

    def data(self) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """What the plots draw now (reads history: any thread)."""
        runs = self.model.plotted_runs()
        return runs, self.model.plot_data(runs)

    def render(self) -> None:
        """Read and draw (UI thread)."""
        self.sync_controls()
        self.show(*self.data())

    def show(self, runs: list[str], data: dict[str, dict[str, Any]]) -> None:
        """Draw ``data``: in place when only values changed, else new figures (UI thread)."""
        m = self.model
        shape = (tuple(runs), m.x_axis, m.log_scale, tuple(data))
        if shape == self._shape and all(self.plots[k].update(v, m.selected)
                                        for k, v in data.items()):
            if self.loop.doc is None:  # notebooks: push the new data
                for pane in self.grid.objects:
                    pane.param.trigger("object")
            return
        self._shape = shape
        self.plots = {metric: MetricPlot(metric, d, runs, x_axis=m.x_axis, log=m.log_scale,
                                         selected=m.selected, on_pick=self._pick)
                      for metric, d in data.items()}
        self.note.object = text_pane(
            "" if data else "no metrics yet: pass metrics to step() or save()" if runs
            else "no checkpoints with a run yet").object
        self.grid.objects = [pn.pane.Bokeh(p.figure, sizing_mode="stretch_width",
                                           min_width=280, styles={"flex": PLOT_FLEX})
                             for p in self.plots.values()]

    def highlight(self) -> None:
        """Ring the selected checkpoint on every plot (UI thread)."""
        for plot in self.plots.values():
            plot.highlight(self.model.selected)
        if self.loop.doc is None:
            for pane in self.grid.objects:
                pane.param.trigger("object")

    def _pick(self, ckpt_id: str) -> None:
        self.model.select(ckpt_id)
