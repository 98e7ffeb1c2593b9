"""`instructedit evaluate --lifelong`: the lifelong protocol from the command line."""

import json

from typer.testing import CliRunner

from editor_core.cli import app


def test_lifelong_protocol_from_the_cli(tmp_path):
    out = tmp_path / "lifelong.json"
    result = CliRunner().invoke(app, ["evaluate", "--lifelong", "1,2", "--editor", "none", "--model", "tiny-llama",
                                      "--split", "val", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["n_edits"] for r in rows] == [1, 2] and rows[0]["method"] == "none/routed+refit"
    for r in rows:
        for fmt in ("plain", "chat"):
            assert 0 <= r[fmt]["reliability"] <= 100 and r[fmt]["locality"] is not None
        assert set(r["teacher_forced"]) == {"reliability", "generalization", "locality"}
