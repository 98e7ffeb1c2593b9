"""bench/gen_failures.py: every answer to a held-back rephrasing falls in exactly one documented kind."""

import json

from benches import load_bench


def test_each_answer_is_one_kind():
    bench = load_bench("gen_failures")
    assert bench.kind_of(" Rome.", "Rome") == "exact"
    assert bench.kind_of(" Rome, Italy. It is", "Rome") == "target, then more"
    assert bench.kind_of(" the city of Rome", "Rome") == "target inside"
    assert bench.kind_of(" the Romeo club", "Rome") == "other"  # at word boundaries only
    assert bench.kind_of("\nRome", "Rome") == "nothing"  # the answer ends at the line break
    assert bench.kind_of(" Paris", "Rome") == "other"


def test_a_run_is_tallied_per_task_and_format(tmp_path):
    bench = load_bench("gen_failures")
    run = {"method": "m", "n_edits": 2, "split": "val"}
    rows = [
        run | {"task": "zsre", "kind": "gen", "question": "q1", "target": "Rome", "plain": "Rome", "chat": "Paris"},
        run | {"task": "counterfact", "kind": "gen", "question": "q2", "target": "Oslo", "plain": "", "chat": "Oslo"},
        run | {"task": "zsre", "kind": "rel", "question": "q0", "target": "Rome", "plain": "x", "chat": "x"},
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "gen_failures.json"
    bench.main([str(path), "--name", "run", "--out", str(out)])
    tally = json.loads(out.read_text())["run"]["tally"]
    assert tally["plain"]["all"]["n"] == 2  # the edits' own questions ("rel") are not rephrasings
    assert tally["plain"]["zsre"]["counts"]["exact"] == 1 and tally["plain"]["counterfact"]["counts"]["nothing"] == 1
    assert tally["chat"]["zsre"]["counts"]["other"] == 1
    assert tally["chat"]["zsre"]["examples"]["other"] == [{"question": "q1", "target": "Rome", "answer": "Paris"}]
    assert "| run | plain | all | 2 | 50.0 |" in out.with_suffix(".md").read_text()
