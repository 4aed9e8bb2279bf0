"""Training curves of a run folder: loss.png and top1.png (matplotlib, Agg backend)."""

from __future__ import annotations

import os

from ..outputs import atomic_path


def plot_curves(history: list[dict], out: str) -> list[str]:
    """Train/val loss and top-1 per epoch from metrics rows (val points at the validated epochs);
    written atomically, returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = []
    for name, keys, ylabel in (
        ("loss", ("train_loss", "val_loss"), "cross-entropy loss"),
        ("top1", ("train_top1", "val_top1"), "top-1 accuracy (%)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key in keys:
            rows = [
                r for r in history if r[key] is not None
            ]  # val_* is empty between validations (val_every)
            ax.plot(
                [r["epoch"] for r in rows],
                [r[key] for r in rows],
                marker="o",
                markersize=3,
                label=key.replace("_", " "),
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a 3-epoch run has no epoch 1.5
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out, f"{name}.png")
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png")
        finally:
            plt.close(fig)
        paths.append(path)
    return paths
