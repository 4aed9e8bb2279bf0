"""Training curves of a run folder: loss.png and top1.png (matplotlib, Agg backend)."""

from __future__ import annotations

import os

from ..errors import UserError
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


# ---- TensorBoard ---------------------------------------------------------------------------------
TENSORBOARD_DIR = "tensorboard"  # in the run folder: `tensorboard --logdir RUN/tensorboard`
# metrics row -> TensorBoard tag; x is the epoch (1-based), as in metrics.csv
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_top1": "top1/train",
    "val_top1": "top1/val",
    "val_top5": "top5/val",
    "lr": "lr",
    "images_per_second": "images_per_second",
}


BATCH_EVERY = 10  # batch-level loss and lr every this many batches (a point per batch is noise)


class EventLog:
    """TensorBoard event files in RUN/tensorboard, written as training goes (the `tensorboard`
    extra: `pip install convzoo[tensorboard]`; without it, none, and metrics.csv and the PNG plots
    as always). One scalar per metric per epoch (x: the epoch), the run's config.yaml as text, and
    in RUN/tensorboard/batches the training loss and lr every BATCH_EVERY batches (x: the batch
    since the run began), to watch a long epoch as it goes."""

    def __init__(self, out: str, config_yaml: str, first_epoch: int = 0, first_batch: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run: events after the checkpoint (written before a kill) are dropped
        folder = os.path.join(out, TENSORBOARD_DIR)
        self.writer = SummaryWriter(folder, purge_step=first_epoch + 1 if first_epoch else None)
        self.batches = SummaryWriter(
            os.path.join(folder, "batches"), purge_step=first_batch + 1 if first_batch else None
        )
        if not first_epoch:
            # 4-space indent: TensorBoard renders text as Markdown, this keeps the YAML as it is
            self.writer.add_text("config", "\n".join("    " + line for line in config_yaml.splitlines()))
        self.writer.flush()

    def epoch(self, row: dict) -> None:
        for key, tag in SCALARS.items():
            if row.get(key) is not None:  # val_* only at validated epochs
                self.writer.add_scalar(tag, row[key], row["epoch"])
        self.writer.flush()  # live: TensorBoard shows each epoch as it ends
        self.batches.flush()

    def batch(self, batch: int, loss: float, lr: float) -> None:
        """After batch number `batch` (1-based, counted over the run): its loss and the lr."""
        if batch % BATCH_EVERY == 0:
            self.batches.add_scalar("loss/train_batch", loss, batch)
            self.batches.add_scalar("lr", lr, batch)

    def close(self) -> None:
        self.writer.close()
        self.batches.close()


def event_log(out: str, config_yaml: str, first_epoch: int, first_batch: int, setting) -> EventLog | None:
    """The run's EventLog: setting `tensorboard` true (the package must be installed), false, or
    auto (when the package is installed)."""
    if setting is False:
        return None
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if setting is True:
            raise UserError(
                "tensorboard: true needs the tensorboard package: pip install 'convzoo[tensorboard]'"
            ) from None
        return None
    return EventLog(out, config_yaml, first_epoch, first_batch)
