"""The PNG of an open-loop sweep (`cbdc bench SCENARIO --sweep ... --plot FILE.png`).

One figure: achieved throughput against offered rate (with the y = x line: what the system would
reach if it kept up) on the left axis, and p99 and p50 latency on a logarithmic right axis.
matplotlib is imported inside ``plot_sweep`` only and draws on an Agg canvas (no display) through
its object API: no pyplot, no global backend switched, so nothing else in the CLI pays for it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping


def _positive(value) -> float:
    """Log axes cannot show 0 (a phase with no completed transfer): leave a gap instead."""
    return float(value) if value and value > 0 else math.nan


def plot_sweep(rows: Iterable[Mapping], path, *, scenario: str = "", seed_outputs: int | None = None,
               date: str | None = None, peak: float | None = None) -> Path:
    """Draw the sweep ``rows`` (each with ``offered``, ``achieved``, ``p50`` and ``p99``; ``p95``, ``max`` and
    ``errors`` are optional) into the PNG at ``path``; returns the path. ``peak``: a closed-loop rate to
    mark with a horizontal line."""
    rows = sorted(rows, key=lambda r: r["offered"])
    if not rows:
        raise ValueError("no sweep rows to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    offered = [float(r["offered"]) for r in rows]
    achieved = [float(r["achieved"]) for r in rows]
    p50 = [_positive(r.get("p50")) for r in rows]
    p99 = [_positive(r.get("p99")) for r in rows]
    errors = [int(r.get("errors") or 0) for r in rows]

    figure = Figure(figsize=(9, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    left = figure.add_subplot(1, 1, 1)
    top = max(offered + achieved + ([peak] if peak else [])) * 1.08
    left.plot([0, top], [0, top], linestyle=":", color="grey", linewidth=1, label="y = x (keeps up)")
    left.plot(offered, achieved, marker="o", color="tab:blue", linewidth=2, label="achieved transfers/s")
    if peak:
        left.axhline(peak, linestyle="--", color="tab:blue", alpha=0.4, linewidth=1,
                     label=f"closed-loop probe {peak:,.0f}/s")
    for x, y, e in zip(offered, achieved, errors):
        if e:
            left.annotate(f"{e:,} errors", (x, y), textcoords="offset points", xytext=(0, -14), ha="center",
                          fontsize=8, color="tab:red")
    left.set_xlim(0, top)
    left.set_ylim(0, top)
    left.set_xlabel("offered rate (transfers/s, open loop)")
    left.set_ylabel("achieved (transfers/s)", color="tab:blue")
    left.grid(True, alpha=0.3)

    right = left.twinx()
    right.plot(offered, p99, marker="s", color="tab:red", linewidth=1.5, label="p99 latency")
    right.plot(offered, p50, marker="^", color="tab:orange", linewidth=1.2, linestyle="--", label="p50 latency")
    shown = [v for v in p50 + p99 if not math.isnan(v)]
    if shown:
        right.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
        right.yaxis.set_major_formatter(plain)
        # within two decades the minor ticks (20, 30, ... 200) carry labels too, plainly written
        right.yaxis.set_minor_formatter(plain if max(shown) / min(shown) < 100 else NullFormatter())
    right.set_ylabel("latency (ms, log scale; from the scheduled send)", color="tab:red")

    handles, labels = left.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    left.legend(handles + more, labels + more_labels, loc="upper left", fontsize=8)
    parts = [f"cbdc bench {scenario}" if scenario else "cbdc bench", "open-loop sweep"]
    if date:
        parts.append(date)
    if seed_outputs is not None:
        parts.append(f"{seed_outputs:,} seed outputs per bank")
    left.set_title(" — ".join(parts), fontsize=11)
    figure.tight_layout()
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
