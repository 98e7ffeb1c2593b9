"""Figures: training curves, evaluation bars, gradient-direction PCA."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(card: dict, path: str | Path) -> None:
    """Training loss and edit success (moving averages), and validation scores."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    curve = card.get("curve", [])
    if curve:
        steps = [c["step"] for c in curve]
        axes[0].plot(steps, [c["loss_value"] for c in curve], label="loss")
        axes[0].plot(steps, [c["nll"] for c in curve], label="edit NLL", alpha=0.7)
        axes[0].plot(steps, [c["kl"] for c in curve], label="locality KL", alpha=0.7)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("step")
        axes[0].set_title("training (20-step means)")
        axes[0].legend()
    val = card.get("validation", [])
    if val:
        steps = [v["step"] for v in val]
        for key, label in (("rel", "reliability"), ("gen", "generalization"), ("loc", "locality"), ("score", "mean")):
            axes[1].plot(steps, [v[key] for v in val], marker="o", label=label)
        axes[1].set_ylim(0, 100)
        axes[1].set_xlabel("step")
        axes[1].set_title("validation (%)")
        axes[1].legend()
    fig.suptitle(f"{card.get('model', '')}  instruct={card['config'].get('instruct')}  tasks={','.join(card['config'].get('tasks', []))}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
