"""After a sweep on the lent GPU machine: summarize every run's training card,
choose the InstructEdit run with the best validation score, and pack it with
its MEND twin (and the plain-recipe InstructEdit run, when that is another one)
as fp16 editors, in pieces small enough to come back.

    python bench/gpu/pack.py RUNS_DIR OUT_DIR
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

PIECE = 15 * 2**20


def summary(runs: Path) -> dict:
    out = {}
    for card_path in sorted(runs.glob("*/card.json")):
        card = json.loads(card_path.read_text())
        curve = card.get("curve") or []
        out[card_path.parent.name] = {
            "step": card["step"],
            "wall_seconds": round(card["wall_seconds"], 1),
            "seconds_per_step": round(curve[-1]["wall"] / curve[-1]["step"], 4) if curve else None,
            "stopped": card.get("stopped"),
            "best": card.get("best"),
            "validation": [{k: v.get(k) for k in ("step", "rel", "gen", "loc", "after", "score")} for v in card.get("validation", [])],
            "config": {k: card["config"][k] for k in ("instruct", "kl_scope", "c_loc", "c_edit", "hard_negatives", "cross_locality", "raw_rephrase_prob")},
        }
    return out


def main() -> None:
    runs, dest = Path(sys.argv[1]), Path(sys.argv[2])
    stats = summary(runs)
    scored = {name: s["best"]["score"] for name, s in stats.items() if name.startswith("ie-") and s["best"]}
    chosen = max(scored, key=scored.get)
    picks = [chosen, "mend-" + chosen.removeprefix("ie-"), "ie-a"]
    picks = list(dict.fromkeys(p for p in picks if (runs / p / "best.safetensors").exists()))
    stats["_chosen"] = {"instructedit": chosen, "shipped_candidates": picks, "rule": "highest validation score among ie-* runs"}
    (dest / "summary.json").write_text(json.dumps(stats, indent=1))
    bundle = runs / "bundle.tar"
    with tarfile.open(bundle, "w") as tar:
        for name in stats:
            if name.startswith("_"):
                continue
            for f in ("card.json", "curves.png", "train.log"):
                if (runs / name / f).exists():
                    tar.add(runs / name / f, arcname=f"{name}/{f}")
        for name in picks:
            fp16 = runs / name / "best-fp16.safetensors"
            subprocess.run([sys.executable, "-m", "editor_core.cli", "export", str(runs / name / "best.safetensors"), "--out", str(fp16)], check=True)
            tar.add(fp16, arcname=f"{name}/best-fp16.safetensors")
    data = bundle.read_bytes()
    for i in range(0, len(data), PIECE):
        (dest / f"bundle.tar.{i // PIECE:02d}").write_bytes(data[i : i + PIECE])
    print(json.dumps({k: (v["step"], v["seconds_per_step"], v["best"] and round(v["best"]["score"], 1)) for k, v in stats.items() if not k.startswith("_")}, indent=1))
    print("chosen:", chosen, "packed:", picks)


if __name__ == "__main__":
    main()
