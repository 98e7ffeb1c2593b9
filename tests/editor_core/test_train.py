import json
import random

import torch

from editor_core.editors import MEND, MENDConfig
from editor_core.hooks import SplitRunner
from editor_core.models import tiny_model
from editor_core.records import EditRecord, Probe
from editor_core.train import TrainConfig, edit_step, train

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
