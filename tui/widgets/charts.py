"""Charts of a job's metrics against step, drawn with plotext inside the app.

`textual_plotext` costs a fifth of a second to import, so only the job-detail screen imports this
module, and only when it is first opened.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual_plotext import PlotextPlot


class MetricChart(PlotextPlot):
    """One metric (or a few, overlaid) against step; long series arrive already thinned."""

    DEFAULT_CSS = """
    MetricChart { height: 1fr; width: 1fr; min-height: 12; }
    """

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.series: dict[str, Sequence[tuple[int, float]]] = {}

    def show(self, series: dict[str, Sequence[tuple[float, float]]], title: str | None = None, xlabel: str = "step") -> None:
        self.series = series
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        names = [n for n, pts in series.items() if pts]
        for name in names:
            pts = series[name]
            plt.plot([p[0] for p in pts], [p[1] for p in pts], marker="braille", label=name if len(names) > 1 else None)
        plt.title(title or (", ".join(names) if names else "no data with a step yet"))
        plt.xlabel(xlabel)
        self.refresh()
