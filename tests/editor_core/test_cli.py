import json

from typer.testing import CliRunner

from editor_core.data import default_data_dir
from service.commands import app

runner = CliRunner()


def test_evaluate_any_zsre_mend_records_file(tmp_path):
    records = default_data_dir() / "zsre_mend" / "zsre_mend_eval_portability_gpt4.json"
    out = tmp_path / "q.json"
    res = runner.invoke(app, ["evaluate", "--model", "tiny-llama", "--records", str(records), "--n", "2",
                              "--editor", "none", "--editor", "ft-l", "--out", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    assert [(r["method"], r["task"], r["setting"], r["n"]) for r in payload["rows"]] == [
        ("none", "zsre", "holdout", 2), ("ft-l", "zsre", "holdout", 2)]
    assert payload["rows"][0]["locality"] == 100.0
    assert out.with_suffix(".md").read_text().startswith("| method |") and out.with_suffix(".png").exists()


def test_one_shot_edit_prints_before_and_after(tmp_path):
    res = runner.invoke(app, ["edit", "--model", "tiny-llama", "--editor", "untrained", "--prompt", "The sky is",
                              "--target", "green", "--save-delta", str(tmp_path / "d.safetensors")])
    assert res.exit_code == 0, res.output
    assert "before" in res.output and (tmp_path / "d.safetensors").exists()


def test_train_rejects_unknown_sampling(tmp_path):
    res = runner.invoke(app, ["train", "--model", "tiny-llama", "--out", str(tmp_path), "--steps", "1", "--sampling", "nope"])
    assert res.exit_code != 0
