import json
import random

import pytest
import torch

from editor_core.editors import MEND, MENDConfig
from editor_core.hooks import SplitRunner
from editor_core.models import tiny_model
from editor_core.records import EditRecord, Probe
from editor_core.report import training_seconds
from editor_core.train import (
    EDIT,
    LOCALITY,
    RAW,
    NeighbourIndex,
    TrainConfig,
    build_rows,
    edit_step,
    other_task_probes,
    selection_score,
    train,
    validate,
)

REC = EditRecord(task="counterfact", prompt="The sky is", target_new="green", rephrase_prompts=("The colour of the sky is",),
                 locality=(Probe("Grass is", "green"),))


def test_one_step_updates_editor_and_uses_gradients(tiny):
    model, tok = tiny
    editor = MEND.for_model(model, MENDConfig(rank=8)).train()
    cfg = TrainConfig(rank=8)
    opt = torch.optim.Adam(editor.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in editor.named_parameters()}
    out = edit_step(editor, SplitRunner(model, editor.spec), tok, [REC], random.Random(0), cfg)
    out["loss"].backward()
    assert all(p.grad is not None for n, p in editor.named_parameters() if "blocks" in n and "up." in n)
    assert editor.steps.grad.abs().sum() > 0
    opt.step()
    assert any(not torch.equal(p, before[n]) for n, p in editor.named_parameters())
    assert 0 <= out["rel"] <= 1 and 0 <= out["loc"] <= 1 and out["kl"] >= 0


def test_train_checkpoints_and_resumes(tmp_path):
    model_tok = tiny_model("llama")
    cfg = TrainConfig(model="tiny-llama", rank=8, steps=6, val_every=3, val_per_task=2, max_per_task=20, out=str(tmp_path / "run"))
    card = train(cfg, model_and_tokenizer=model_tok, resume=False, show_progress=False)
    assert card["step"] == 6 and len(card["validation"]) == 2
    for f in ("editor.safetensors", "best.safetensors", "optimizer.safetensors", "card.json", "curves.png"):
        assert (tmp_path / "run" / f).exists(), f
    cfg.steps = 9
    card = train(cfg, model_and_tokenizer=model_tok, resume=True, show_progress=False)
    assert card["step"] == 9 and len(card["validation"]) == 3
    saved = json.loads((tmp_path / "run" / "card.json").read_text())
    assert saved["data"]["train"].keys() == {"counterfact", "wikirecent", "convsent"}


def test_kl_both_is_answer_term_plus_all_term(tiny_llama):
    """'both' = the KL of 'all' plus the mean KL over locality answer positions, so
    the answers keep their weight among the many prompt positions."""
    model, tok = tiny_llama
    torch.manual_seed(0)
    editor = MEND.for_model(model, MENDConfig(rank=8, step_init=-1e-1)).eval()
    runner = SplitRunner(model, editor.spec)
    kl = {s: edit_step(editor, runner, tok, [REC], random.Random(0), TrainConfig(rank=8, kl_scope=s), train=False)["kl"]
          for s in ("answer", "all", "both")}
    assert kl["answer"] > 0 and kl["all"] > 0
    assert abs(kl["both"] - (kl["all"] + kl["answer"])) < 1e-5 * max(1.0, kl["both"])


def test_cross_locality_probes_come_from_other_tasks():
    other = EditRecord(task="zsre", prompt="Q", target_new="A", locality=(Probe("nq question: who?", "me"),))
    pools = {"counterfact": [REC], "zsre": [other]}
    probes = other_task_probes(pools, [REC, other], random.Random(0))
    assert probes == [other.locality[0], REC.locality[0]]
    # one task only: the probe comes from the same task's pool
    assert other_task_probes({"counterfact": [REC]}, [REC], random.Random(0)) == [REC.locality[0]]


def test_extra_locality_rows_enter_the_kl(tiny_llama):
    model, tok = tiny_llama
    torch.manual_seed(0)
    editor = MEND.for_model(model, MENDConfig(rank=8, step_init=-1e-1)).eval()
    runner = SplitRunner(model, editor.spec)
    cfg = TrainConfig(rank=8, kl_scope="answer")
    plain = edit_step(editor, runner, tok, [REC], random.Random(0), cfg, train=False)["kl"]
    extra = edit_step(editor, runner, tok, [REC], random.Random(0), cfg, train=False,
                      extra_locality=[Probe("The capital of France is", "Paris")])["kl"]
    assert extra != plain


def test_kl_after_adds_the_position_after_each_target(tiny_llama):
    """'after' = the locality-answer KL plus the KL where each edit and rephrase
    row goes on past its target; it differs from 'answer' only by that term."""
    model, tok = tiny_llama
    torch.manual_seed(0)
    editor = MEND.for_model(model, MENDConfig(rank=8, step_init=-1e-1)).eval()
    runner = SplitRunner(model, editor.spec)
    kl = {s: edit_step(editor, runner, tok, [REC], random.Random(0), TrainConfig(rank=8, kl_scope=s), train=False)["kl"]
          for s in ("answer", "after")}
    assert kl["after"] > kl["answer"] > 0


def test_validation_reports_after_target_agreement(tiny_llama):
    model, tok = tiny_llama
    editor = MEND.for_model(model, MENDConfig(rank=8)).eval()
    res = validate(editor, SplitRunner(model, editor.spec), tok, [REC, REC], TrainConfig(rank=8))
    assert 0 <= res["after"] <= 100 and res["tasks"]["counterfact"]["after"] == res["after"]
    # an editor with no step changes nothing: the token after the target is untouched
    with torch.no_grad():
        editor.steps.zero_()
    assert validate(editor, SplitRunner(model, editor.spec), tok, [REC], TrainConfig(rank=8))["after"] == 100


def test_hard_negatives_share_the_template_and_never_the_subject():
    def cf(subject, prompt, truth):
        return EditRecord(task="counterfact", prompt=prompt, target_new="X", subject=subject, ground_truth=truth)

    a = cf("Paris", "Paris is the capital of", "France")
    pool = [a, cf("Rome", "Rome is the capital of", "Italy"), cf("Oslo", "Oslo is the capital of", "Norway"),
            cf("Paris", "Paris is the capital of", "France"),  # the same subject: never its own neighbour
            cf("Bonn", "Bonn lies on the", "Rhine"),  # another relation
            cf("Lima", "Lima is the capital of", None)]  # no true answer: no probe
    idx = NeighbourIndex({"counterfact": pool})
    probes = idx.probes(a, 5, random.Random(0))
    assert sorted(probes, key=lambda p: p.prompt) == [Probe("Oslo is the capital of", "Norway"), Probe("Rome is the capital of", "Italy")]
    assert len(idx.probes(a, 1, random.Random(0))) == 1
    assert idx.probes(EditRecord(task="counterfact", prompt="no subject here", target_new="X"), 2, random.Random(0)) == []


def test_train_with_hard_negatives_runs(tmp_path):
    cfg = TrainConfig(model="tiny-llama", tasks=("counterfact",), rank=8, steps=2, val_every=2, val_per_task=2, max_per_task=50,
                      hard_negatives=2, out=str(tmp_path / "run"))
    card = train(cfg, model_and_tokenizer=tiny_model("llama"), resume=False, show_progress=False)
    assert card["step"] == 2 and card["config"]["hard_negatives"] == 2


def test_second_phase_starts_from_a_saved_editor(tmp_path):
    model_tok = tiny_model("llama")
    first = TrainConfig(model="tiny-llama", rank=8, steps=3, val_every=3, val_per_task=2, max_per_task=20, out=str(tmp_path / "one"))
    train(first, model_and_tokenizer=model_tok, resume=False, show_progress=False)
    saved = MEND.load(tmp_path / "one" / "editor.safetensors", model_tok[0])
    second = TrainConfig(model="tiny-llama", rank=8, steps=0, val_every=1, val_per_task=2, max_per_task=20, kl_scope="after",
                         init_from=str(tmp_path / "one" / "editor.safetensors"), out=str(tmp_path / "two"))
    card = train(second, model_and_tokenizer=model_tok, resume=False, show_progress=False)
    assert card["step"] == 0
    again = MEND.load(tmp_path / "two" / "editor.safetensors", model_tok[0])
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="instruct"):
        train(TrainConfig(model="tiny-llama", rank=8, steps=1, instruct=False, init_from=second.init_from, out=str(tmp_path / "three")),
              model_and_tokenizer=model_tok, resume=False, show_progress=False)


def test_selection_score_counts_spill_over():
    assert selection_score({"rel": 100, "gen": 100, "loc": 100, "after": 0}) == 75
    assert selection_score({"rel": 90, "gen": float("nan"), "loc": 60, "after": 90}) == 80
    assert selection_score({"rel": 100, "gen": 100, "loc": 100, "after": 100, "raw": 0}) == 80


def test_training_seconds_count_the_first_phase(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "card.json").write_text(json.dumps({"wall_seconds": 100.0, "config": {}}))
    second = {"wall_seconds": 30.0, "config": {"init_from": str(tmp_path / "one" / "best.safetensors")}}
    assert training_seconds(second) == 130.0
    exported = {"wall_seconds": 30.0, "config": {"init_from": "gone/best.safetensors"}, "init_from_card": {"wall_seconds": 50.0}}
    assert training_seconds(exported) == 80.0


def test_instructed_editors_also_score_the_plain_edit_prompt(tiny):
    model, _ = tiny
    for instruct, expected in ((True, [EDIT, RAW, LOCALITY]), (False, [EDIT, LOCALITY])):
        editor = MEND.for_model(model, MENDConfig(rank=8, instruct=instruct))
        prompts, answers, kinds = build_rows(editor, [REC], random.Random(0), False, raw_prompt_row=True)
        assert kinds.tolist() == expected
        assert prompts[1] == (REC.prompt if instruct else REC.locality[0].prompt)
        assert prompts[0] != REC.prompt if instruct else prompts[0] == REC.prompt


def test_training_logs_plain_progress_lines_when_not_a_terminal(tmp_path, capsys):
    """Under nohup or a pipe the progress bar never draws; a plain line every 100 steps must."""
    cfg = TrainConfig(model="tiny-llama", tasks=("counterfact",), rank=8, steps=100, val_every=100, val_per_task=1, max_per_task=10,
                      hard_negatives=0, out=str(tmp_path / "run"))
    train(cfg, model_and_tokenizer=tiny_model("llama"), resume=False, show_progress=True)
    out = capsys.readouterr().out
    assert "step 100/100: loss" in out and " min" in out


def test_selection_can_follow_a_subset_of_the_statistics(tmp_path):
    res = {"rel": 90, "gen": 60, "loc": 90, "after": 0}
    assert selection_score(res, ("rel", "gen", "loc")) == 80 and selection_score(res) == 60
    with pytest.raises(ValueError, match="select_on"):
        TrainConfig(select_on=("rel", "bleu"))
    cfg = TrainConfig(model="tiny-llama", rank=8, steps=2, val_every=2, val_per_task=2, max_per_task=20, select_on=["rel", "loc"],
                      out=str(tmp_path / "run"))
    card = train(cfg, model_and_tokenizer=tiny_model("llama"), resume=False, show_progress=False)
    best = card["best"]
    assert best["score"] == pytest.approx((best["rel"] + best["loc"]) / 2)


def test_time_budget_stops_after_one_validation(tmp_path):
    cfg = TrainConfig(model="tiny-llama", rank=8, steps=50, val_every=25, val_per_task=1, max_per_task=10, max_minutes=1e-6,
                      out=str(tmp_path / "run"))
    card = train(cfg, model_and_tokenizer=tiny_model("llama"), resume=False, show_progress=False)
    assert card["step"] == 1 and len(card["validation"]) == 1 and "time budget" in card["stopped"]


def test_plain_prompt_row_weight_scales_its_share_of_the_edit_loss(tiny_llama):
    """Weight 0 leaves the edit NLL of the rows without the plain prompt; a bad weight is refused."""
    model, tok = tiny_llama
    torch.manual_seed(0)
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=True, step_init=-1e-1)).eval()
    runner = SplitRunner(model, editor.spec)

    def nll(**kw):
        return edit_step(editor, runner, tok, [REC], random.Random(0), TrainConfig(rank=8, **kw), train=False)["nll"]

    assert nll(raw_prompt_row=True, raw_row_weight=0.0) == pytest.approx(nll(raw_prompt_row=False), rel=1e-4)
    assert nll(raw_prompt_row=True, raw_row_weight=1.0) != pytest.approx(nll(raw_prompt_row=True, raw_row_weight=0.3), rel=1e-4)
    with pytest.raises(ValueError, match="raw_row_weight"):
        TrainConfig(raw_row_weight=-1)
