"""bench/lifelong.py's results file: what a row measured is its key (a sampled N and the same N measured whole are two rows)."""

import json

from benches import load_bench


def _bench():
    return load_bench("lifelong")


def _row(n: int, fmt: str, gen: float, sample: dict | None) -> dict:
    figures = dict.fromkeys(("reliability", "locality", "retention_first10pct", "fluency_ratio", "capability_delta"), 100.0)
    return {
        "method": "instructedit/routed+refit",
        "n_edits": n,
        "prompt_format": fmt,
        **figures,
        "generalization": gen,
        "teacher_forced": None,
        "seconds_per_edit": 1.0,
        "extra": {"split": "test", "sample": sample},
    }


def test_a_sampled_row_and_a_whole_one_at_the_same_n_are_both_kept(tmp_path):
    bench = _bench()
    sample = {"first": 100, "rest": 300, "of_rest": 900, "seed": 0, "deltas_computed": 405}
    out = tmp_path / "lifelong.json"
    out.write_text(json.dumps({"model": "m", "rows": [_row(1000, f, 70.0, sample) for f in ("plain", "chat")]}))
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps({"model": "m", "rows": [_row(1000, f, 72.0, None) for f in ("plain", "chat")]}))
    bench.main(["--merge", str(whole), "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["generalization"], bool(r["extra"]["sample"])) for r in rows) == [(70.0, True)] * 2 + [(72.0, False)] * 2
    table = out.with_suffix(".md").read_text()
    assert "| 1000 (measured: first 100, 300 of the other 900) |" in table and "| 1000 | plain |" in table
    assert out.with_suffix(".png").stat().st_size > 0
    # merging a newer sampled measurement replaces the sampled rows only
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"model": "m", "rows": [_row(1000, f, 71.0, sample) for f in ("plain", "chat")]}))
    bench.main(["--merge", str(newer), "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["generalization"], bool(r["extra"]["sample"])) for r in rows) == [(71.0, True)] * 2 + [(72.0, False)] * 2
    assert [bench.key_of(r) for r in rows].count(("instructedit/routed+refit", 1000, "test", True)) == 2


def test_the_plot_takes_the_whole_row_where_an_n_has_both():
    bench = _bench()
    sample = {"first": 100, "rest": 300, "of_rest": 900, "seed": 0, "deltas_computed": 405}
    rows = [_row(100, "plain", 74.0, None), _row(1000, "plain", 72.0, None)]
    rows += [_row(1000, "plain", 70.0, sample), _row(500, "plain", 76.0, sample)]
    assert bench.points(rows, "generalization") == [(100, 74.0), (500, 76.0), (1000, 72.0)]
    assert bench.points(list(reversed(rows)), "generalization") == [(100, 74.0), (500, 76.0), (1000, 72.0)]
    rows[1]["generalization"] = None  # a figure the whole row lacks: the sampled one stands
    assert bench.points(rows, "generalization")[-1] == (1000, 70.0)
