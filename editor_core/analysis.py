"""The paper's analysis (InstructEdit §4.3): where do the editing-gradient
directions of different tasks lie?

For each edit, the transformed gradient factors (ũ, δ̃) of one edited weight
are averaged over the edit's tokens, concatenated and L2-normalized; the edits
of all tasks are projected on their first two principal components and
coloured by task. A separation score (between-task over within-task variance
in the projection; higher = tasks occupy more distinct regions) summarizes
each panel.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

from .data import load_task_split
from .editors import load_editor
from .hooks import SplitRunner
from .models import load_model
from .report import parse_editor

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)

TASK_COLORS = {"counterfact": "tab:blue", "wikirecent": "tab:orange", "convsent": "tab:green", "zsre": "tab:red"}


@torch.no_grad()
def edit_directions(editor, model, tok, records, param: str | None = None) -> torch.Tensor:
    param = param or editor.spec.edit_params[-1]
    runner = SplitRunner(model, editor.spec)
    out = []
    for r in records:
        rec = editor.instructed(r)
        batch = editor.encode(tok, [rec.prompt], [rec.target_new]).to(model.device)
        cut = runner.bottom(batch.input_ids, batch.attention_mask)
        captured, _ = editor.capture(runner, cut, batch)
        key, mode = editor.route[param]
        u_t, d_t = editor.transforms[key](*captured[param], mode)
        v = torch.cat([u_t.mean(0), d_t.mean(0)])
        out.append(v / v.norm().clamp(min=1e-12))
    return torch.stack(out)


def separation(points: torch.Tensor, labels: list[str]) -> float:
    mean = points.mean(0)
    between = within = 0.0
    for t in set(labels):
        sel = points[[i for i, l in enumerate(labels) if l == t]]
        between += len(sel) * float(((sel.mean(0) - mean) ** 2).sum())
        within += float(((sel - sel.mean(0)) ** 2).sum())
    return between / max(within, 1e-12)


def gradient_pca(*, editors: list[str], model: str, n: int, out: Path, data_dir=None,
                 tasks=("counterfact", "wikirecent", "convsent", "zsre")) -> dict:
    m, tok = load_model(model)
    records = [r for t in tasks for r in load_task_split(t, "test", data_dir)[:n]]
    labels = [r.task for r in records]
    fig, axes = plt.subplots(1, len(editors), figsize=(5.5 * len(editors), 5), squeeze=False)
    stats = {}
    for ax, spec in zip(axes[0], editors):
        name, path = parse_editor(spec)
        editor = load_editor(path, m)
        x = edit_directions(editor, m, tok, records)
        x = x - x.mean(0)
        _, s, v = torch.linalg.svd(x, full_matrices=False)
        pts = x @ v[:2].T
        explained = (s[:2] ** 2 / (s**2).sum()).tolist()
        stats[name] = {"separation": round(separation(pts, labels), 3), "explained_variance": [round(e, 3) for e in explained]}
        for t in tasks:
            sel = [i for i, l in enumerate(labels) if l == t]
            ax.scatter(pts[sel, 0], pts[sel, 1], s=14, alpha=0.75, c=TASK_COLORS.get(t), label=t)
        ax.set_title(f"{name}: separation {stats[name]['separation']:.2f}")
        ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f}%)")
        ax.set_ylabel(f"PC2 ({100 * explained[1]:.0f}%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return stats
