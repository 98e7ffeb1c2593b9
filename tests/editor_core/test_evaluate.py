from editor_core.delta import base_weights, load_weights, materialize, state_sha256
from editor_core.editors import MEND, MENDConfig
from editor_core.editors.ftl import FTL, FTLConfig
from editor_core.evaluate import NO_EDIT, evaluate_records
from editor_core.losses import masked_nll
from editor_core.records import EditRecord, Probe
from editor_core.tokens import encode_pairs

RECS = [
    EditRecord(task="zsre", prompt="Who is the author of Dune?", target_new="Jane Austen", rephrase_prompts=("Dune was written by",),
               locality=(Probe("nq question: who sings thriller", "Michael Jackson"),),
               portability=(Probe("Dune's author was born in", "Steventon"),)),
    EditRecord(task="counterfact", prompt="The Louvre is in", target_new="Berlin", locality=(Probe("Big Ben is in", "London"),)),
]


def test_no_edit_locality_is_perfect_and_weights_restored(tiny_llama):
    model, tok = tiny_llama
    summary, per = evaluate_records(model, tok, NO_EDIT, RECS, fluency_every=1, fluency_tokens=5)
    assert summary["locality"] == 100.0 and len(per) == 2
    assert summary["portability"] is not None and summary["fluency"] is not None


def test_editor_evaluation_restores_base(tiny_llama):
    model, tok = tiny_llama
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=True, step_init=-5.0)).eval()
    sha = state_sha256(model, editor.spec.edit_params)
    for sequential in (False, True):
        summary, per = evaluate_records(model, tok, editor, RECS, sequential=sequential, fluency_every=10)
        assert len(per) == 2 and summary["reliability"] is not None
        assert state_sha256(model, editor.spec.edit_params) == sha
    held, _ = evaluate_records(model, tok, editor, RECS, held_out=True, fluency_every=10)
    assert held["reliability"] is not None


def test_ftl_lowers_target_nll_within_the_norm_ball(tiny):
    model, tok = tiny
    ftl = FTL.for_model(model, FTLConfig(steps=10, lr=1e-2, eps=1e-2))
    delta = ftl.compute_delta(model, tok, RECS[1:])
    for p in delta.params():
        assert delta.dense(p).abs().max() <= 1e-2 + 1e-7
    base = base_weights(model, ftl.spec.edit_params)
    batch = encode_pairs(tok, [RECS[1].prompt], [RECS[1].target_new])
    nll = lambda: masked_nll(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels).item()  # noqa: E731
    before = nll()
    load_weights(model, materialize(base, [delta]))
    after = nll()
    load_weights(model, base)
    assert after < before


def test_each_edit_starts_from_the_unedited_weights(tiny_llama):
    """Single mode: a record scores the same after another record's edit as alone."""
    model, tok = tiny_llama
    editor = MEND.for_model(model, MENDConfig(rank=8, instruct=False, step_init=-20.0)).eval()
    _, alone = evaluate_records(model, tok, editor, RECS[1:], fluency_every=10)
    _, both = evaluate_records(model, tok, editor, RECS, fluency_every=10)
    drop = lambda d: {k: v for k, v in d.items() if k != "fluency"}  # noqa: E731 (fluency: every 10th record)
    assert drop(both[1]) == drop(alone[0])
    _, seq = evaluate_records(model, tok, editor, RECS, sequential=True, fluency_every=10)
    assert drop(seq[1]) != drop(alone[0])  # sequential edits do accumulate
