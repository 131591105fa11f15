"""Write a figure as PNG and PDF atomically (temporary file, then os.replace)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from experiments.atomic_write import atomic_write

FORMATS = ("png", "pdf")


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as out_dir/stem.png and out_dir/stem.pdf; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    written = []
    for index, fmt in enumerate(FORMATS):
        if index == 1:
            # The first save ran the layout engine; keep its positions for the other formats
            # instead of laying the figure out again (drawing is the slow part).
            fig.set_layout_engine("none")
        target = out_dir / f"{stem}.{fmt}"
        atomic_write(target, lambda handle, fmt=fmt: fig.savefig(handle, format=fmt), binary=True)
        written.append(target)
    return written
