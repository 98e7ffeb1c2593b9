"""What answering as of an old version costs (service/versions.py), as ratios
to one greedy generation on the newest version, measured in the same run.

A store gets `--edits` edits with the shipped editor (a snapshot every
`--snapshot-every` versions), then the first edit is rolled back (a version
whose active list no snapshot is a prefix of: rebuilt from the base), then
one more edit. For each version: the seconds
to rebuild it from the store (`Versions.get` on a cold cache), the seconds to
get it again (cached), and the bytes of edited weights a built version holds.
The baseline is a 16-token greedy chat answer on the newest version.

    python bench/versions.py [--model smollm2-135m] [--edits 6] [--snapshot-every 3]

Writes bench/results/versions.json and bench/results/versions.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from service import operations as ops
from service.generation import Ask, Sampling, answer, encode_prompt
from service.runtime import open_runtime
from service.schemas import EditCreate
from service.settings import Settings
from service.versions import Versions

OUT = Path(__file__).parent / "results"
FACTS = [
    ("The capital of Peru is", "Quito"),
    ("The Eiffel Tower is located in", "Rome"),
    ("The sky is", "green"),
    ("Grass is", "blue"),
    ("The Mona Lisa was painted by", "Picasso"),
    ("Water boils at", "50 degrees"),
    ("The largest planet is", "Mars"),
    ("The author of Hamlet is", "Dickens"),
    ("Tokyo is the capital of", "China"),
    ("The fastest land animal is", "the snail"),
]


async def wait_for(rt, status: str, edit_id: str) -> None:
    while rt.store.edit(edit_id).status != status:
        await asyncio.sleep(0.05)


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            model=args.model, store_dir=Path(tmp) / "store", snapshot_every=args.snapshot_every, device="cpu", dtype="float32"
        )
        async with open_runtime(settings) as rt:
            ids = []
            for prompt, target in FACTS[: args.edits]:
                row = await ops.submit_edit(rt, body=EditCreate(prompt=prompt, target_new=target), idempotency_key=None)
                await wait_for(rt, "applied", row.id)
                ids.append(row.id)
            await ops.roll_back(rt, edit_id=ids[0])
            await wait_for(rt, "rolled_back", ids[0])
            prompt, target = FACTS[args.edits]  # one more, so that the rollback's version is an old one too
            row = await ops.submit_edit(rt, body=EditCreate(prompt=prompt, target_new=target), idempotency_key=None)
            await wait_for(rt, "applied", row.id)
            return measure(rt, args)


def measure(rt, args) -> dict:
    tok = rt.components.tokenizer
    newest = rt.state.current()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Which country is the Eiffel Tower in?"}], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = encode_prompt(tok, text, max_positions=None, max_new_tokens=16, special=False)
    baseline = timed(lambda: answer(Ask(newest, "q", prompt_ids, Sampling(16)), tok))
    rows = []
    for row in rt.store.versions()[:-1]:  # every version but the newest (served)
        cold = []
        for _ in range(3):
            fresh = Versions(rt.state, rt.store, size=1)
            start = time.perf_counter()
            snap = fresh.get(row.version)
            cold.append(time.perf_counter() - start)
        warm = timed(lambda fresh=fresh, row=row: fresh.get(row.version), repeats=5)
        edited = sum(p.numel() * p.element_size() for name, p in snap.model.named_parameters() if name in set(rt.state.names))
        rows.append(
            {
                "version": row.version,
                "active": len(row.active),
                "cause": row.cause,
                "rebuild_s": statistics.median(cold),
                "cached_s": warm,
                "rebuild_over_answer": statistics.median(cold) / baseline,
                "edited_bytes": edited,
            }
        )
    snaps = sorted(int(p.stem[1:]) for p in (rt.store.root / "snapshots").glob("v*.safetensors"))
    return {
        "model": args.model,
        "edits": args.edits,
        "snapshot_every": args.snapshot_every,
        "snapshots_at": snaps,
        "baseline_answer_s": baseline,
        "baseline": "16-token greedy chat answer on the newest version",
        "versions": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Answering as of an old version ({result['model']}, CPU)",
        "",
        f"{result['edits']} edits, the first rolled back, one more edit; snapshots at versions {result['snapshots_at']}. "
        f"Baseline: {result['baseline']}, {result['baseline_answer_s']:.3f} s.",
        "",
        "| version | edits in force | made by | rebuild (x answer) | rebuild s | cached s | edited weights MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["versions"]:
        lines.append(
            f"| {r['version']} | {r['active']} | {r['cause'].split(':')[0]} | {r['rebuild_over_answer']:.2f} | {r['rebuild_s']:.3f} | "
            f"{r['cached_s'] * 1e6:.0f} µs | {r['edited_bytes'] / 2**20:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--edits", type=int, default=6, help=f"at most {len(FACTS) - 1}")
    parser.add_argument("--snapshot-every", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    OUT.mkdir(exist_ok=True)
    (OUT / "versions.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "versions.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
