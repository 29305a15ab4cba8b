"""The per-epoch curves of a run (curves.png)."""

from __future__ import annotations

from typing import Any


def plot_curves(metrics: dict[str, Any], path: str) -> None:
    """Plot every per-epoch series (train and validation side by side) into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = metrics.get("epochs", [])
    # A panel per metric: training and validation side by side, and metrics logged for validation only
    # (BLEU, exact match of the translate recipe) on their own.
    keys = {k for e in epochs for k in e if k not in ("epoch", "seconds", "learning_rate")}
    names = sorted({k.removeprefix("val_") for k in keys})
    if not epochs or not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    xs = [e["epoch"] for e in epochs]
    for ax, name in zip(axes[0], names):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            ys = [e.get(key) for e in epochs]
            if any(isinstance(y, (int, float)) for y in ys):
                ax.plot(xs, [y if isinstance(y, (int, float)) else float("nan") for y in ys], style,
                        label=key, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
