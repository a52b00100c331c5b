"""Server-side plots (matplotlib, Agg, PNG) and their cache.

Versions are immutable and a finished request's metrics never change, so a plot is
rendered once and kept on disk under a key that names what it shows (an artifact sha256,
a request id). Figures are built with the object API (``Figure`` + Agg canvas), never
pyplot's global state, so request threads can render at the same time.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

CLASSES = list(range(10))
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class PlotCache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def get(self, key: str, render: Callable[[], bytes]) -> bytes:
        if not _SAFE_KEY.match(key):
            raise ValueError(f"bad plot cache key {key!r}")
        path = self.directory / f"{key}.png"
        if path.exists():
            return path.read_bytes()
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one rendering per key when several images load at once
            if path.exists():
                return path.read_bytes()
            png = render()
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
            temporary.write_bytes(png)
            temporary.replace(path)
            return png


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def per_class_bars(series: dict[str, Sequence[float | None]], title: str,
                   highlight: Sequence[int] = ()) -> bytes:
    """Grouped bars of per-class accuracy, one group per class, one bar per series.
    Classes in ``highlight`` (the forgotten ones) are marked on the axis."""
    figure = _figure(7.0, 3.4)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for index, (name, values) in enumerate(series.items()):
        positions = [k + (index - (len(series) - 1) / 2) * width for k in CLASSES]
        heights = [0.0 if v is None else 100.0 * v for v in values]
        axes.bar(positions, heights, width=width, label=name, color=colours[index % 4])
    axes.set_xticks(CLASSES, [f"{k}*" if k in highlight else str(k) for k in CLASSES])
    axes.set_ylim(0, 105)
    axes.set_xlabel("class (* = forgotten)" if highlight else "class")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    if len(series) > 1:  # beside the axes, never over the bars
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                    frameon=False)
    return _png(figure)


def confusion_heatmap(matrix: Sequence[Sequence[int]], title: str) -> bytes:
    """Rows: true class; columns: predicted class; colour: share of the row."""
    figure = _figure(6.0, 5.2)  # room for four-digit counts in readable type
    axes = figure.add_subplot()
    shares = []
    for row in matrix:
        total = sum(row)
        shares.append([value / total if total else 0.0 for value in row])
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                axes.text(j, i, str(value), ha="center", va="center", fontsize=8,
                          color="white" if shares[i][j] > 0.5 else "black")
    axes.set_xticks(CLASSES)
    axes.set_yticks(CLASSES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of true class")
    return _png(figure)


def sweep_plot(rows: Sequence[dict], forgotten_class: int) -> bytes:
    """Accuracy (left) and loss (right) of the named sets against alpha, log scale."""
    figure = _figure(8.0, 3.4)
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    alphas = [row["alpha"] for row in rows]
    for name, style in (("forget", "o-"), ("retain", "s-"), ("test_forget", "o--"),
                        ("test_retain", "s--")):
        accuracy = [None if row[name] is None else 100.0 * row[name]["accuracy"] for row in rows]
        loss = [None if row[name] is None else row[name]["loss"] for row in rows]
        if all(value is None for value in accuracy):
            continue
        accuracy_axes.plot(alphas, accuracy, style, label=name, markersize=4)
        loss_axes.plot(alphas, loss, style, label=name, markersize=4)
    for axes, label in ((accuracy_axes, "accuracy (%)"), (loss_axes, "mean cross-entropy")):
        axes.set_xscale("log")
        axes.set_xlabel("alpha")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    # Losses span decades (0.01 to 10+): a log axis with plain-number ticks (0.01, 0.1, 1,
    # 10) instead of symlog's crowded 10^x labels around its linear band.
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    loss_axes.set_yscale("log")
    loss_axes.yaxis.set_major_locator(LogLocator(base=10))
    loss_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    loss_axes.yaxis.set_minor_formatter(NullFormatter())
    accuracy_axes.set_ylim(-2, 102)
    handles, labels = accuracy_axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False)
    figure.suptitle(f"Dampening class {forgotten_class}: accuracy and loss against alpha")
    return _png(figure)
