#!/usr/bin/env python3
"""Draws the CSV of `cargo run --release --example compare -- --csv FILE` as a PNG:
milliseconds per test (acquire -> first query, p50) against fixture size, log scales,
one panel per file system. Needs matplotlib (`pip install matplotlib`).

usage: scripts/plot_compare.py compare.csv docs/compare.png
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(csv_path, png_path):
    series = defaultdict(lambda: defaultdict(list))  # fs -> method -> [(mb, p50)]
    with open(csv_path) as f:
        for row in csv.reader(f):
            # fs, fixture_mb, method (may hold commas if unquoted), p50_ms, p95_ms
            fs, mb, method, p50 = row[0], row[1], ",".join(row[2:-2]), row[-2]
            series[fs][method].append((float(mb), float(p50)))
    systems = sorted(series)
    methods = sorted({m for fs in series.values() for m in fs})
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    handles = {}
    fig, axes = plt.subplots(1, len(systems), figsize=(7 * len(systems), 5.5), sharey=True, squeeze=False)
    for ax, fs in zip(axes[0], systems):
        for method, points in sorted(series[fs].items()):
            points.sort()
            ours = method.startswith("pgclone")
            (line,) = ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "-o" if ours else "--s",
                color=colors[method],
                label=method,
                linewidth=2.5 if ours else 1,
            )
            handles[method] = line
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("fixture size (MB)")
        ax.set_title(fs)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("ms per test: acquire -> first query (p50)")
    axes[0][-1].legend([handles[m] for m in methods], methods, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("pgclone vs the alternatives, same golden, same run")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
