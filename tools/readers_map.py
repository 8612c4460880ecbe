"""Draw the reader's map: which chapters build on which (book/_static/readers_map.svg),
shown in the introduction (book/intro.md, section "A reader's map").

    .venv/bin/python tools/readers_map.py          # rewrites the SVG (and a PNG for the PDF)

The dependency list below is the transitive reduction of the chapters' cross-references
(a chapter that cites a box, figure or section of an earlier one depends on it);
``tests/test_book_style.py`` checks that every edge is still backed by such a reference.
Positions are by layer (longest chain of prerequisites) so arrows point down.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: chapter number -> (file stem, short title, part)
CHAPTERS = {
    1: ("part1/ch01_min_norm", "Minimum-norm\nsolutions", "I"),
    2: ("part1/ch02_random_features", "Random\nfeatures", "I"),
    3: ("part1/ch03_sgd_not_gd", "Why SGD\nis not GD", "I"),
    4: ("part2/ch04_mean_stability", "Mean\nstability", "II"),
    5: ("part2/ch05_mean_square", "Mean-square\nstability", "II"),
    6: ("part2/ch06_higher_moments", "Higher\nmoments", "II"),
    7: ("part2/ch07_exact_threshold", "The exact\nthreshold", "II"),
    8: ("part2/ch08_beyond_interpolation", "Beyond\ninterpolation", "II"),
    9: ("part2/ch09_alignment", "Alignment of\nSGD noise", "II"),
    10: ("part3/ch10_flat_to_smooth", "Flat minima,\nsmooth functions", "III"),
    11: ("part3/ch11_population", "To the\npopulation", "III"),
    12: ("part4/ch12_gd_edge", "GD at the edge\nof stability", "IV"),
    13: ("part4/ch13_sgd_selects", "SGD selects\nminima", "IV"),
    14: ("part4/ch14_edge_of_ms", "At the edge of\nmean square", "IV"),
    15: ("part4/ch15_diagnose", "Diagnosing\nyour model", "IV"),
}

#: (earlier, later): the later chapter uses results of the earlier one.
EDGES = [
    (1, 2), (3, 12), (4, 5), (5, 6), (6, 7), (7, 8), (7, 9), (7, 10), (7, 12),
    (9, 15), (10, 11), (10, 13), (12, 13), (13, 14), (14, 15),
]

#: (x, y) of each box: y is the layer (longest chain of prerequisites), x spreads a layer.
POSITIONS = {
    1: (0, 0), 2: (0, 1), 3: (1, 0),
    4: (2, 0), 5: (2, 1), 6: (2, 2), 7: (2, 3),
    12: (0, 4), 8: (1.05, 4), 9: (2.1, 4), 10: (3.15, 4),
    13: (1.0, 5), 11: (3.15, 5), 14: (1.0, 6), 15: (1.6, 7),
}

PART_COLOURS = {"I": "#dbe9f6", "II": "#fde3c8", "III": "#dcefd9", "IV": "#ece0f3"}
PART_NAMES = {
    "I": "Part I: implicit\nregularization",
    "II": "Part II: linear\nstability",
    "III": "Part III: flat to\nsmooth",
    "IV": "Part IV: trained\nnetworks",
}


def draw(out_dir: Path = ROOT / "book" / "_static") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    sys.path.insert(0, str(ROOT / "src"))
    from companion.book.style import TEXT_WIDTH, use_book_style

    use_book_style()
    box_w, box_h, dy = 1.5, 0.66, 0.95
    fig, ax = plt.subplots(figsize=(TEXT_WIDTH, 7.0))
    boxes = {}
    for ch, (x, y) in POSITIONS.items():
        _, title, part = CHAPTERS[ch]
        cx, cy = x * 1.62, -y * dy
        patch = FancyBboxPatch(
            (cx - box_w / 2, cy - box_h / 2), box_w, box_h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=PART_COLOURS[part], edgecolor="#555555", linewidth=0.8, zorder=3,
        )
        ax.add_patch(patch)
        boxes[ch] = patch
        ax.text(cx, cy + 0.19, f"Chapter {ch}", ha="center", va="center", fontsize=8.5,
                fontweight="bold", zorder=4)
        ax.text(cx, cy - 0.1, title, ha="center", va="center", fontsize=8.5, zorder=4,
                linespacing=1.1)
    for a, b in EDGES:
        (xa, ya), (xb, yb) = POSITIONS[a], POSITIONS[b]
        start = (xa * 1.62, -ya * dy - box_h / 2)
        end = (xb * 1.62, -yb * dy + box_h / 2)
        ax.add_patch(FancyArrowPatch(
            start, end, arrowstyle="-|>", mutation_scale=10, color="#444444",
            linewidth=0.9, shrinkA=1, shrinkB=1, zorder=2,
        ))
    handles = [Patch(facecolor=c, edgecolor="#555555", label=PART_NAMES[p])
               for p, c in PART_COLOURS.items()]
    ax.legend(handles=handles, loc="upper right", fontsize=8.5, frameon=False,
              labelspacing=0.9)
    ax.set_xlim(-0.85, 3.15 * 1.62 + 0.85)
    ax.set_ylim(-7 * dy - 0.4, 0.4)
    ax.set_aspect("equal")
    ax.axis("off")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("svg", "png"):
        path = out_dir / f"readers_map.{ext}"
        fig.savefig(path, bbox_inches="tight", dpi=200,
                    metadata={"Date": None} if ext == "svg" else None)
        written.append(path)
    plt.close(fig)
    return written


if __name__ == "__main__":
    for path in draw():
        print(path.relative_to(ROOT))
