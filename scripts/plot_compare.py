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
        for fs, mb, method, p50, _p95 in csv.reader(f):
            series[fs][method].append((float(mb), float(p50)))
    systems = sorted(series)
    fig, axes = plt.subplots(1, len(systems), figsize=(7 * len(systems), 5.5), sharey=True, squeeze=False)
    for ax, fs in zip(axes[0], systems):
        for method, points in sorted(series[fs].items()):
            points.sort()
            style = "-o" if method.startswith("pgclone") else "--s"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=method, linewidth=2 if method.startswith("pgclone") else 1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("fixture size (MB)")
        ax.set_title(f"{fs}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("ms per test: acquire -> first query (p50)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("pgclone vs the alternatives, same golden, same run")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
