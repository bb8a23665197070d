"""Charts (PNG) for the results of ``bench.spark`` and ``bench.bulkcopy``.

``bench.report`` draws the main grid; this module draws the two other result kinds from their
JSON, so a chart can always be made again from a committed result::

    .venv/bin/python -m bench.charts bench/results/spark-*.json bench/results/bulkcopy-*.json

Spark: one horizontal bar per target, its write and read halves stacked, labelled with the
total and its ratio to local disk (issue 14's target: <= 1.5x). Bulk copy: one panel per data
set and direction, the median round's rate per tool (objects/s for small objects, MB/s for
large ones) and the client CPU per object under each bar (issue 17: >= 1.0x and >= 1.2x
s5cmd). Both read only what their JSON holds; a cell that failed is drawn as an empty bar
labelled with its status.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.report import labelled_bars

SPARK_COLORS = {"write": "#1f77b4", "read": "#aec7e8"}
TOOL_COLORS = {"zonemount": "#1f77b4", "zonemount-before": "#aec7e8", "s5cmd": "#ff7f0e"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spark_chart(doc: dict[str, Any], path: Path) -> None:
    """Write and read time per target (``bench.spark``'s JSON), with each total's ratio to
    local disk."""
    plt = _pyplot()
    results = doc["results"]
    local = next(
        (r["total_s"] for r in results if r["target"] == "local disk" and r["status"] == "ok"),
        None,
    )
    names = [r["target"] for r in results]
    fig, ax = plt.subplots(figsize=(8.0, 0.55 * len(results) + 1.6))
    top = max((r["total_s"] or 0.0 for r in results if r["status"] == "ok"), default=1.0)
    for i, r in enumerate(results):
        if r["status"] != "ok":
            ax.text(0, i, f"  {r['status']}: {r.get('reason', '')[:60]}", va="center", fontsize=8)
            continue
        ax.barh(i, r["write_s"], color=SPARK_COLORS["write"])
        ax.barh(i, r["read_s"], left=r["write_s"], color=SPARK_COLORS["read"])
        ratio = f" ({r['total_s'] / local:.2f}x local disk)" if local else ""
        ax.text(
            r["total_s"] + top * 0.01, i, f"{r['total_s']:.2f} s{ratio}", va="center", fontsize=8
        )
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("seconds (lower is better)", fontsize=8)
    meta = doc["meta"]
    ax.set_title(
        f"Spark pipeline, {meta['rows']:,} rows, {meta['when']} "
        f"({meta['cores']} cores; best of {meta['repeats']})",
        fontsize=9,
    )
    from matplotlib.patches import Patch

    ax.legend(
        [Patch(color=c) for c in SPARK_COLORS.values()],
        ["write job", "read back"],
        fontsize=8,
        loc="lower right",
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _median(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    ok = sorted((c for c in cells if c["status"] == "ok"), key=lambda c: c["wall"])
    if not ok:
        return None
    wall = statistics.median_low([c["wall"] for c in ok])
    return next(c for c in ok if c["wall"] == wall)


def bulkcopy_chart(doc: dict[str, Any], path: Path) -> None:
    """The median round's rate per tool, a panel per (data set, direction) of
    ``bench.bulkcopy``'s JSON; re-runs are left to the table (they copy nothing)."""
    plt = _pyplot()
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for cell in doc["cells"]:
        if cell["direction"].endswith(" re-run"):
            continue
        tools = groups.setdefault((cell["dataset"], cell["direction"]), {})
        tools.setdefault(cell["tool"], []).append(cell)
    panels = sorted(groups)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.4 * max(1, len(panels)), 4.0))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, (dataset, direction) in zip(axes, panels, strict=False):
        small = dataset == "small"
        unit = "objects/s" if small else "MB/s"
        tools = groups[(dataset, direction)]
        names = sorted(tools, key=lambda t: (t != "zonemount", t))
        picked = [_median(tools[t]) for t in names]
        values = [
            (c["objects_per_s"] if small else c["mb_per_s"]) if c is not None else 0.0
            for c in picked
        ]
        labels = [
            "failed"
            if cell is None
            else f"{value:,.0f}\n{cell['cpu'] / max(1, cell['objects']) * 1e3:.2f} ms CPU/obj"
            for value, cell in zip(values, picked, strict=True)
        ]
        colors = [TOOL_COLORS.get(n, "#9467bd") for n in names]
        top = labelled_bars(ax, values, colors, labels, turn_long=False)
        objects = next((c["objects"] for c in picked if c is not None), 0)
        ax.set_ylim(0, top * 1.3)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_title(
            f"{objects:,} {dataset} objects, {direction}\n{unit} (higher is better)", fontsize=8
        )
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"Bulk copy {doc['stamp']} ({doc['cpus']} CPUs; median round)", fontsize=9, y=0.99)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart(json_path: Path) -> Path:
    """Draw the chart of one result file next to it (``.png``); its kind from its keys."""
    doc = json.loads(json_path.read_text())
    png = json_path.with_suffix(".png")
    if "results" in doc and "meta" in doc:
        spark_chart(doc, png)
    elif "cells" in doc:
        bulkcopy_chart(doc, png)
    else:
        raise SystemExit(f"{json_path}: neither a bench.spark nor a bench.bulkcopy result")
    return png


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        raise SystemExit("usage: python -m bench.charts RESULT.json [...] (spark or bulkcopy)")
    for name in paths:
        print(f"wrote {chart(Path(name))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
