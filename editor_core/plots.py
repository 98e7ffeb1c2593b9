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


def bar_chart(rows: list, path: Path) -> None:
    """Bars per task (x) and method (colour), one panel per metric. The rows of
    the held-back instruction stay in the table: each method has one bar per task.
    `rows` are `editor_core.evaluate.Row`s."""
    main = [r for r in rows if r.setting != "unseen-instruction"] or rows
    tasks = list(dict.fromkeys(r.task for r in main))
    methods = list(dict.fromkeys(r.method for r in main))
    metrics_ = [m for m in ("reliability", "generalization", "locality", "portability") if any(getattr(r, m) is not None for r in main)]
    colours = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(metrics_), figsize=(3.4 * len(metrics_), 3.6), sharey=True, squeeze=False)
    width = 0.84 / max(len(methods), 1)
    for ax, metric in zip(axes[0], metrics_):
        for j, method in enumerate(methods):
            value = {r.task: getattr(r, metric) for r in main if r.method == method}
            xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(tasks))]
            ax.bar(xs, [value.get(t) or 0 for t in tasks], width, color=colours(j % colours.N), label=method)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
