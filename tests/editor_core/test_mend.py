import torch

from editor_core.delta import Delta, base_weights, load_weights, materialize, state_sha256
from editor_core.editors import MEND, MENDConfig, load_editor
from editor_core.losses import masked_nll
from editor_core.records import EditRecord

RECORDS = [
    EditRecord(task="zsre", prompt="The capital of Peru is", target_new="Quito"),
    EditRecord(task="zsre", prompt="Who wrote Hamlet?", target_new="Tolstoy and friends"),
]


def autograd_grad(model, tok, editor, records):
    """dL/dW for every edited weight, by plain autograd on the whole model, with
    the same loss the editor uses (per-record mean NLL, summed over records)."""
    batch = editor.encode(tok, [r.prompt for r in records], [r.target_new for r in records])
    params = [model.get_parameter(p) for p in editor.spec.edit_params]
    for p in params:
        p.requires_grad_(True)
    try:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss = masked_nll(logits, batch.labels, per_row=True).sum()
        grads = torch.autograd.grad(loss, params)
    finally:
        for p in params:
            p.requires_grad_(False)
    return dict(zip(editor.spec.edit_params, grads))


def test_identity_editor_gives_step_times_gradient(tiny):
    model, tok = tiny
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=False, step_init=-0.5))
    editor.eval()  # neutral statistics: mean 0, std 1
    with torch.no_grad():
        editor.steps.copy_(torch.linspace(-0.5, 0.7, len(editor.steps)))
    delta = editor.compute_delta(model, tok, RECORDS)
    grads = autograd_grad(model, tok, editor, RECORDS)
    assert set(delta.params()) == set(editor.spec.edit_params)
    for i, p in enumerate(editor.spec.edit_params):
        expected = editor.steps[i].item() * grads[p]
        assert delta.dense(p).shape == model.get_parameter(p).shape
        torch.testing.assert_close(delta.dense(p), expected, rtol=1e-4, atol=1e-6)
        assert expected.abs().max() > 0


def test_padding_contributes_nothing(tiny):
    model, tok = tiny
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=False)).train()
    short = [RECORDS[0]]
    alone = editor.compute_delta(model, tok, short)
    # Same record in a batch with a much longer one: its own tokens are padded,
    # so the batch delta must be alone's plus the long record's delta.
    long = [EditRecord(task="zsre", prompt="x " * 30 + "then", target_new="y")]
    editor.eval()
    alone = editor.compute_delta(model, tok, short)
    other = editor.compute_delta(model, tok, long)
    both = editor.compute_delta(model, tok, short + long)
    for p in editor.spec.edit_params:
        torch.testing.assert_close(both.dense(p), alone.dense(p) + other.dense(p), rtol=1e-4, atol=1e-6)
    assert both.rank(editor.spec.edit_params[0]) == alone.rank(editor.spec.edit_params[0]) + other.rank(editor.spec.edit_params[0])


def test_apply_then_remove_is_bit_identical(tiny):
    model, tok = tiny
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=False, step_init=-1.0))
    names = editor.spec.edit_params
    base = base_weights(model, names)
    before = state_sha256(model, names)
    d1 = editor.compute_delta(model, tok, RECORDS[:1])
    d2 = editor.compute_delta(model, tok, RECORDS[1:])
    try:
        load_weights(model, materialize(base, [d1, d2]))
        edited = state_sha256(model, names)
        assert edited != before
        load_weights(model, materialize(base, [d2]))
        assert state_sha256(model, names) not in (before, edited)
        load_weights(model, materialize(base, []))
        assert state_sha256(model, names) == before
    finally:
        load_weights(model, base)


def test_delta_save_load_roundtrip(tmp_path, tiny_llama):
    model, tok = tiny_llama
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=False))
    delta = editor.compute_delta(model, tok, RECORDS)
    digest = delta.save(tmp_path / "d.safetensors")
    loaded = Delta.load(tmp_path / "d.safetensors")
    assert loaded.sha256() == digest == delta.sha256()
    assert loaded.meta["editor"] == "mend"
    for p in delta.params():
        torch.testing.assert_close(loaded.dense(p), delta.dense(p))


def test_editor_save_load_roundtrip(tmp_path, tiny_llama):
    model, tok = tiny_llama
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=False)).train()
    editor.compute_delta(model, tok, RECORDS)  # gathers running statistics
    editor.save(tmp_path / "e.safetensors")
    again = load_editor(tmp_path / "e.safetensors", model)
    editor.eval()
    a = editor.compute_delta(model, tok, RECORDS)
    b = again.compute_delta(model, tok, RECORDS)
    for p in a.params():
        torch.testing.assert_close(a.dense(p), b.dense(p))
