"""PNG plots for MLflow artifacts: one way to draw a figure headless and get its bytes."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any


def png(draw: Callable[[Any], None], figsize: tuple[float, float]) -> bytes:
    """Draw on a fresh matplotlib Axes (Agg backend, no display), return the figure as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, dpi=100)
    try:
        draw(ax)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")  # a legend placed outside the axes stays in
        return buf.getvalue()
    finally:
        plt.close(fig)
