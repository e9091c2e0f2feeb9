"""Charts of a job's metrics against step, drawn with plotext inside the app.

`textual_plotext` costs a fifth of a second to import, so only the job-detail screen imports this
module, and only when it is first opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from textual_plotext import PlotextPlot

SMOOTHING = (0.0, 0.6, 0.9, 0.99)  # what `m` cycles through on the charts tab, as trackers' sliders do


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing (the first points are not pulled
    towards zero): s_t = w s_(t-1) + (1 - w) x_t, divided by 1 - w^t."""
    out: list[float] = []
    last, n = 0.0, 0
    for v in values:
        n += 1
        last = weight * last + (1 - weight) * v
        out.append(last / (1 - weight ** n) if weight > 0 else v)
    return out


class MetricChart(PlotextPlot):
    """One metric (or a few, overlaid) against step; long series arrive already thinned."""

    DEFAULT_CSS = """
    MetricChart { height: 1fr; width: 1fr; min-height: 12; }
    """

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.series: Mapping[str, Sequence[tuple[float, float]]] = {}
        self.smoothing = 0.0
        self._labels: tuple[str | None, str] = (None, "step")  # title, x label of the last show()

    def set_smoothing(self, weight: float) -> None:
        self.smoothing = weight
        self.show(self.series, *self._labels)

    def show(self, series: Mapping[str, Sequence[tuple[float, float]]], title: str | None = None, xlabel: str = "step") -> None:
        self.series = series
        self._labels = (title, xlabel)
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        names = [n for n, pts in series.items() if pts]
        for name in names:
            pts = series[name]
            steps, values = [p[0] for p in pts], [p[1] for p in pts]
            if self.smoothing > 0:  # the raw points faint, the smoothed curve over them
                plt.plot(steps, values, marker="braille", color="gray")
                plt.plot(steps, ema(values, self.smoothing), marker="braille", label=name if len(names) > 1 else None)
            else:
                plt.plot(steps, values, marker="braille", label=name if len(names) > 1 else None)
        base = title or (", ".join(names) if names else "no data with a step yet")
        plt.title(f"{base} (EMA {self.smoothing:g})" if names and self.smoothing > 0 else base)
        plt.xlabel(xlabel)
        self.refresh()
