"""The book's one figure style: sizes, fonts and high-resolution output, set in one place.

Every chapter calls :func:`use_book_style` once, in its first code cell. Figures are then
drawn at the width of the page's text column (:data:`TEXT_WIDTH` inches at 100 dpi, the
width the theme shows without scaling) with fonts that stay legible at that size, and are
sent to the page as PNGs at twice the resolution ("retina"), which the browser shows at
their nominal size: sharp on high-resolution screens, small enough for pages with many
figures.
"""

from __future__ import annotations

#: Width in inches of a full-width figure (about 700 px at 100 dpi: the theme's text column).
TEXT_WIDTH = 7.0

#: Matplotlib settings of every figure in the book.
BOOK_RC = {
    "figure.figsize": (TEXT_WIDTH, 3.4),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.constrained_layout.use": False,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def use_book_style() -> None:
    """Apply :data:`BOOK_RC` and, inside IPython, send figures as retina PNGs.

    Examples
    --------
    >>> import matplotlib
    >>> use_book_style()
    >>> matplotlib.rcParams["font.size"]
    10.0
    """
    import matplotlib

    matplotlib.rcParams.update(BOOK_RC)
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing to configure
        return
    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")
