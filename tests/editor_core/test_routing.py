"""The routed memory: which edit a question falls under, and the refit that makes an edit show."""

import dataclasses
import hashlib
import json

import pytest
import torch

from editor_core import metrics
from editor_core.chat import chat_prompt
from editor_core.delta import Delta, base_weights, materialize
from editor_core.editors import LocFT, LocFTConfig
from editor_core.lifelong import Method, Probes, Routed, run
from editor_core.models import ModelSpec, load_model
from editor_core.records import EditRecord, Probe
from editor_core.refit import (
    PREFIXES,
    QUICK,
    SUBJECT_QUESTIONS,
    RefitConfig,
    _Anchor,
    _other_relations,
    answers_exactly,
    refit,
    relation_questions,
    variants,
)
from editor_core.routing import (
    NARROW,
    IdfTable,
    Key,
    MemoryEntry,
    RelationTable,
    RoutedMemory,
    RouterConfig,
    default_relations,
    guess_subject,
    scope_of,
    words,
)
from editor_core.tokens import encode_pairs
from service.state import fork


def delta(tag: float) -> Delta:
    return Delta({"w": (torch.full((2, 1), tag), torch.ones(1, 3))})


def memory(*prompts: str, threshold: float = RouterConfig.threshold) -> RoutedMemory:
    return RoutedMemory([MemoryEntry(f"e{i}", delta(i), scope_of(p)) for i, p in enumerate(prompts)], config=RouterConfig(threshold))


def test_words_ignore_case_order_and_punctuation():
    assert words("Which family does Epaspidoceras belong to?") == {"which", "family", "does", "epaspidoceras", "belong", "to"}


def test_a_question_routes_to_its_own_edit_and_rephrasings_follow_the_subject():
    m = memory(
        "Which family does Epaspidoceras belong to?", "Which family does Noctua belong to?", "The mother tongue of Danielle Darrieux is"
    )
    assert m.route("Which family does Epaspidoceras belong to?").entry.edit_id == "e0"
    assert m.route("What family are Epaspidoceras?").entry.edit_id == "e0"  # the held-back rephrasing of ZsRE
    assert m.route("Where Danielle Darrieux is from, people speak the language of").entry.edit_id == "e2"


def test_unrelated_questions_run_on_the_base():
    m = memory("Which family does Epaspidoceras belong to?", "The mother tongue of Danielle Darrieux is")
    for q in ("What is the capital of France?", "nq question: who sang the song africa", "Michel Rocard is a native speaker of"):
        route = m.route(q)
        assert route.entry is None and route.index == -1 and route.similarity < m.config.threshold, (q, route)


def test_a_question_must_name_the_edits_subject():
    # Same relation, a shared surname: the word cosine alone sends it to the edit (0.78 among 1,000 edits).
    m = memory("William H. Seward was native to")
    assert m.route("George Seward is native to").entry is None
    assert m.route("Where was William H. Seward born?").entry.edit_id == "e0"
    # A subject given with the edit is what a question must name; one guessed from lower-case words is not found.
    given = RoutedMemory([MemoryEntry("e0", delta(0), scope_of("fish and chips, from", subject="fish and chips"))])
    assert given.route("fish and chips originated in").entry.edit_id == "e0"
    assert given.route("fish soup, from").entry is None
    # A subject the question does not name (a typo, another spelling) never locks an edit out of its own question.
    typo = RoutedMemory([MemoryEntry("e0", delta(0), scope_of("The capital of Peru is", subject="Perú"))])
    assert typo.route("The capital of Peru is").entry.edit_id == "e0"


def test_the_subject_is_guessed_from_the_capitalized_name():
    assert guess_subject("What sport does Joe DiMaggio play? They play") == "Joe DiMaggio"
    assert guess_subject("Who was Thomas Palaiologos's mother?") == "Thomas Palaiologos"
    assert guess_subject("Prince Franz de Paula of Liechtenstein found employment in") == "Prince Franz de Paula of Liechtenstein"
    assert guess_subject("The capital of Peru is") == "Peru"
    assert guess_subject("Who developed the iPhone?") == "iPhone"  # a name in camel case
    assert guess_subject("What does eBay sell, and since when?") == "eBay"
    assert guess_subject("Who directed the non-English film Amelie?") == "Amelie"
    assert guess_subject("nq question: who sang the song africa") == ""
    assert Key("nq question: who sang the song africa").required() == frozenset()  # nothing named: the cosine alone decides
    assert Key("The mother tongue of Danielle Darrieux is", "Danielle Darrieux's").required() == {"danielle", "darrieux"}


def test_the_service_default_threshold_is_the_routers():
    from service.settings import Settings

    assert Settings.model_fields["router_threshold"].default == RouterConfig.threshold
    assert Settings.model_fields["router_narrow_threshold"].default == RouterConfig.narrow_threshold
    assert Settings.model_fields["router_relation_check"].default == RouterConfig.relation_check


def test_the_later_edit_of_the_same_question_wins():
    m = memory("The capital of Peru is", "The capital of Peru is")
    assert m.route("The capital of Peru is").entry.edit_id == "e1"


def test_the_memory_is_a_function_of_the_ordered_list():
    a, b = memory("The capital of Peru is", "Grass is"), memory("The capital of Peru is", "Grass is")
    assert a.sha256() == b.sha256()
    assert memory("Grass is", "The capital of Peru is").sha256() != a.sha256()
    b.append(MemoryEntry("e9", delta(9), scope_of("Snow is")))
    assert b.sha256() != a.sha256() and b.route("Snow is").entry.edit_id == "e9"


def narrow(tag: float) -> Delta:
    return Delta(delta(tag).factors, {"scope": NARROW})


PERU = ("The capital of Peru is", "What is the capital city of Peru?", "Which city is Peru's capital?")
ABOUT_PERU = ("Tell me about Peru.", "What is the official language of Peru?", "Who founded Peru?", "Peru is")


def test_a_narrow_edit_answers_only_questions_worded_like_its_own():
    # A quick-fitted delta answers any question about its subject with the target: its entry is narrow.
    m = RoutedMemory([MemoryEntry("e0", narrow(0), scope_of("The capital of Peru is", subject="Peru"))])
    assert m.entries[0].narrow
    assert all(m.route(q).entry.edit_id == "e0" for q in PERU)
    for q in ABOUT_PERU:
        route = m.route(q)
        assert route.entry is None and route.similarity == 0.0, (q, route)
    # The same delta held wide (a full refit's), or a router that does not narrow: every question that names Peru
    # (with no relation check: it would refuse the question about the official language, below).
    for wide in (
        RoutedMemory(
            [MemoryEntry("e0", delta(0), scope_of("The capital of Peru is", subject="Peru"))], config=RouterConfig(relation_check=False)
        ),
        RoutedMemory(m.entries, config=RouterConfig(narrow_threshold=0.0, relation_check=False)),
    ):
        assert all(wide.route(q).entry.edit_id == "e0" for q in PERU + ABOUT_PERU)
    # A rephrasing the caller gave is a key of its own, worded like itself; a key that is all subject takes any question.
    given = RoutedMemory([MemoryEntry("e0", narrow(0), scope_of("The capital of Peru is", ["Peru's seat of government is in"], "Peru"))])
    assert given.route("Where is Peru's seat of government?").entry.edit_id == "e0"
    bare = RoutedMemory([MemoryEntry("e0", narrow(0), scope_of("Peru", subject="Peru"))])
    assert bare.route("Tell me about Peru.").entry.edit_id == "e0"


def test_a_question_a_narrow_edit_refuses_is_answered_as_before_that_edit():
    m = RoutedMemory(
        [
            MemoryEntry("e0", delta(0), scope_of("The official language of Peru is", subject="Peru")),
            MemoryEntry("e1", narrow(1), scope_of("The capital of Peru is", subject="Peru")),
        ]
    )
    assert m.route("What is the official language of Peru?").entry.edit_id == "e0"
    assert m.route("What is the capital city of Peru?").entry.edit_id == "e1"
    # A new edit of the same question, in its window: its own wordings reach it; another wording gets
    # the older edit's answer, as it did before the new edit was made (not the base's).
    again = RoutedMemory(
        [
            MemoryEntry("e0", delta(0), scope_of("The capital of Peru is", subject="Peru")),
            MemoryEntry("e1", narrow(1), scope_of("The capital of Peru is", subject="Peru")),
        ]
    )
    assert again.route("The capital of Peru is").entry.edit_id == "e1"
    assert again.route("Where do the lawmakers of Peru meet?").entry.edit_id == "e0"
    assert RoutedMemory(again.entries[:1]).route("Where do the lawmakers of Peru meet?").entry.edit_id == "e0"


def test_narrowing_reads_the_subject_without_the_subject_check_and_takes_a_threshold_of_one():
    entry = MemoryEntry("e0", narrow(0), scope_of("The capital of Peru is", subject="Peru"))
    unchecked = RoutedMemory([entry], config=RouterConfig(subject_check=False))
    assert unchecked.route("The capital of Peru is").entry.edit_id == "e0"
    assert unchecked.route("Tell me about Peru.").entry is None  # the cosine alone would send it (0.46)
    strict = RoutedMemory([entry], config=RouterConfig(threshold=1.0, narrow_threshold=1.0))
    assert strict.route("The capital of Peru is").entry.edit_id == "e0"  # its own cosine is 1 - 2e-16


def test_a_question_about_another_relation_of_the_subject_does_not_reach_the_edit():
    def held(*edits: tuple[str, str], check: bool = True) -> RoutedMemory:
        entries = [MemoryEntry(f"e{i}", delta(i), scope_of(p, subject=s)) for i, (p, s) in enumerate(edits)]
        return RoutedMemory(entries, config=RouterConfig(relation_check=check))

    m = held(("The capital of Peru is", "Peru"))
    assert {"capital", "country"} in default_relations().labels and {"language", "official"} in default_relations().labels
    # its own relation in other words, and questions that ask no relation, still reach it
    for q in (
        "What is the capital city of Peru?",
        "Which city is Peru's capital?",
        "Tell me about Peru.",
        "Where do the lawmakers of Peru meet?",
    ):
        assert m.route(q).entry.edit_id == "e0", q
    # another relation's label, asked of the subject, does not: the base answers it
    for q in (
        "What is the official language of Peru?",
        "The name of the head of state of Peru is",
        "Which religion is most common in Peru?",
    ):
        route = m.route(q)
        assert route.entry is None and route.similarity == 0.0, (q, route)
        assert held(("The capital of Peru is", "Peru"), check=False).route(q).entry.edit_id == "e0", q
    # a relation the edit's own question names is never refused for it, and an older edit of that relation still answers
    both = held(("The official language of Peru is", "Peru"), ("The capital of Peru is", "Peru"))
    assert both.route("What is the official language of Peru?").entry.edit_id == "e0"
    assert both.route("What is the capital city of Peru?").entry.edit_id == "e1"
    # a rephrasing given with the edit is a key of its own, and its words are the edit's too: a user who
    # meets a wording the check refuses ("country", a label of its own) can send it with the edit
    given = RoutedMemory([MemoryEntry("e0", delta(0), scope_of("The capital of Peru is", ["The country Peru is governed from"], "Peru"))])
    assert m.route("Which country is Peru governed from?").entry is None
    assert given.route("Which country is Peru governed from?").entry.edit_id == "e0"
    assert m.route("Where does the government of Peru sit?").entry.edit_id == "e0"  # "head of government" needs both words
    # a possessive is no relation word: "Peru's" in the edit's question does not let every possessive question through
    possessive = held(("What is Peru's capital?", "Peru"))
    assert possessive.route("Which city is Peru's capital?").entry.edit_id == "e0"
    assert possessive.route("What is Peru's official language?").entry is None


def test_relation_labels_round_trip_and_leave_out_the_subject(tmp_path):
    table = RelationTable.build(
        [
            ("The name of the father of Ada Lovelace is", "Ada Lovelace"),
            ("The place of birth of Ada Lovelace is", "Ada Lovelace"),
            ("Ada Lovelace", "Ada Lovelace"),
        ]
    )
    assert table.labels == (frozenset({"father"}), frozenset({"place", "birth"}))
    table.save(tmp_path / "relations.json", source="test")
    assert RelationTable.load(tmp_path / "relations.json") == table


def test_whether_an_edit_is_narrow_is_part_of_the_state():
    def held(d: Delta) -> RoutedMemory:
        return RoutedMemory([MemoryEntry("e0", d, scope_of("The capital of Peru is", subject="Peru"))])

    wide, narrowed = held(delta(0)), held(narrow(0))
    assert narrowed.sha256() != wide.sha256()
    # the delta's own hash says it: a narrow delta and a wide one of the same tensors are two files in a store
    assert narrow(0).sha256() != delta(0).sha256() == Delta(delta(0).factors, {"editor": "x"}).sha256()
    # a wide memory hashes as before narrow entries existed (stored versions keep their state hashes)
    before = hashlib.sha256(json.dumps(["e0", delta(0).sha256(), [["The capital of Peru is", "Peru"]]]).encode()).hexdigest()
    assert wide.sha256() == before


def test_a_narrow_delta_stays_narrow_in_its_file(tmp_path):
    narrow(0).save(tmp_path / "d.safetensors")
    back = Delta.load(tmp_path / "d.safetensors")  # (the load checks the file's sha256 against its content)
    assert MemoryEntry("e0", back, ()).narrow and back.sha256() == narrow(0).sha256()


def test_idf_table_round_trip(tmp_path):
    table = IdfTable.build(["the capital of peru", "the capital of chile", "who wrote hamlet"], min_df=1)
    assert table.idf("the") < table.idf("hamlet") < table.idf("never-seen")
    table.save(tmp_path / "idf.json", source="test")
    assert IdfTable.load(tmp_path / "idf.json") == table


def test_refit_makes_greedy_decoding_say_the_target_and_stop():
    model, tok = load_model("tiny-llama")
    spec = ModelSpec.for_model(model)
    base = base_weights(model, spec.edit_params)
    prompts = ["The capital of Peru is", chat_prompt(tok, "The capital of Peru is")]
    assert not any(answers_exactly(model, tok, prompts, ["Quito"] * 2))
    cfg = RefitConfig(lr=3e-2, steps=100, rank=8, min_prob=0.0, variants=0)  # the tiny model: no margin (its logits are flat)
    result = refit(model, tok, spec, "The capital of Peru is", "Quito", None, cfg)
    assert result.took and 0 < result.steps < 100
    tree = fork(model, materialize(base, [result.delta]))
    assert all(answers_exactly(tree, tok, prompts, ["Quito"] * 2))
    assert all(torch.equal(model.get_parameter(n), w) for n, w in base.items()), "a refit never changes the model"
    # A fit that keeps nothing about the subject marks its delta narrow (QUICK does); a refit of it is narrow only if it says so.
    assert QUICK.narrow_scope and not RefitConfig().narrow_scope and "scope" not in result.delta.meta
    quick = refit(model, tok, spec, "The capital of Peru is", "Quito", None, dataclasses.replace(cfg, steps=1, narrow_scope=True))
    assert MemoryEntry("e0", quick.delta, ()).narrow
    again = refit(model, tok, spec, "The capital of Peru is", "Quito", quick.delta, dataclasses.replace(cfg, steps=1))
    assert not MemoryEntry("e0", again.delta, ()).narrow


def test_made_variants_keep_the_subject_and_are_the_same_every_time():
    made = variants("What river does the Little Pine Creek flow into?", 4)
    assert made == variants("What river does the Little Pine Creek flow into?", 4)
    assert made[0].endswith(" What river does the Little Pine Creek flow into?")
    assert any(made[0].startswith(p) for p in PREFIXES)
    dropped = made[1].split()
    assert {"What", "Little", "Pine", "Creek"} <= set(dropped) and len(dropped) < 9


def test_made_variants_can_keep_the_relations_words():
    prompt = "The mother tongue of Danielle Darrieux is"
    glue = variants(prompt, 6, drops="glue")
    for made in glue[1::2]:  # the word-dropping ones: only "of" or "is" may go
        kept = made.split()
        assert {"mother", "tongue", "Danielle", "Darrieux"} <= set(kept) and len(kept) < len(prompt.split())
    assert all(made.endswith(" " + prompt) for made in variants(prompt, 6, drops="none"))
    assert variants("Paris, in", 2, drops="glue")[1] == "Paris,"
    with pytest.raises(ValueError):
        variants(prompt, 2, drops="relation")


def test_refit_with_margin_variants_and_kept_continuation():
    model, tok = load_model("tiny-llama")
    spec = ModelSpec.for_model(model)
    # the tiny random model's logits are nearly flat (its lm_head is small), so its margin is small too
    cfg = RefitConfig(lr=3e-2, steps=150, rank=8, min_prob=0.006, variants=2, keep=6)
    result = refit(model, tok, spec, "The capital of Peru is", "Quito", None, cfg)
    assert result.took
    tree = fork(model, materialize(base_weights(model, spec.edit_params), [result.delta]))
    asked = ["The capital of Peru is", chat_prompt(tok, "The capital of Peru is"), *variants("The capital of Peru is", 2)]
    assert all(answers_exactly(tree, tok, asked, ["Quito"] * len(asked)))
    # the margin: every answer token's probability reached min_prob
    batch = encode_pairs(tok, asked, ["Quito" + tok.eos_token] * len(asked))
    with torch.no_grad():
        logp = torch.log_softmax(tree(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float(), -1)
    probs = logp.gather(2, batch.labels.clamp(min=0)[..., None])[..., 0].exp()[batch.answer_mask]
    assert float(probs.min()) >= cfg.min_prob


def test_a_refit_reading_the_head_once_per_step_takes_the_steps_it_takes_reading_it_per_part(monkeypatch):
    """The answers' logits and the kept continuation's (whole vocabulary) come from one product with
    the head's weight: the same steps and correction as when each part reads the head itself."""
    model, tok = load_model("tiny-llama")
    spec = ModelSpec.for_model(model)
    cfg = RefitConfig(lr=3e-2, steps=40, rank=8, min_prob=0.006, variants=2, keep=6, subject_questions=2, subject_tokens=4)
    given = []
    divergence = _Anchor.divergence
    monkeypatch.setattr(_Anchor, "divergence", lambda self, h, logits=None: given.append(logits is not None) or divergence(self, h, logits))
    shared = refit(model, tok, spec, "The capital of Peru is", "Quito", None, cfg, subject="Peru")
    assert any(given) and not all(given), "the kept continuation's logits came with the answers', the subject questions' did not"
    monkeypatch.setattr(_Anchor, "reads_the_head", property(lambda self: False))
    apart = refit(model, tok, spec, "The capital of Peru is", "Quito", None, cfg, subject="Peru")
    assert shared.steps == apart.steps > 1 and shared.took == apart.took
    for p, (left, right) in apart.delta.factors.items():
        torch.testing.assert_close(shared.delta.factors[p][0], left, atol=1e-4, rtol=1e-3)
        torch.testing.assert_close(shared.delta.factors[p][1], right, atol=1e-4, rtol=1e-3)


def test_refit_keeps_other_questions_about_the_subject_as_the_base_answers_them():
    model, tok = load_model("tiny-llama")
    spec = ModelSpec.for_model(model)
    base = base_weights(model, spec.edit_params)
    cfg = RefitConfig(lr=3e-2, steps=150, rank=8, min_prob=0.0, variants=0, subject_questions=2, subject_tokens=6)
    other = [q.format("Peru") for q in SUBJECT_QUESTIONS[:2]]
    other += [chat_prompt(tok, q) for q in other]
    before = metrics.generate_answers(model, tok, other, max_new_tokens=6)
    result = refit(model, tok, spec, "The capital of Peru is", "Quito", None, cfg, subject="Peru")
    assert result.took and result.kept and result.delta.meta["refit_kept"]
    tree = fork(model, materialize(base, [result.delta]))
    assert all(answers_exactly(tree, tok, ["The capital of Peru is", chat_prompt(tok, "The capital of Peru is")], ["Quito"] * 2))
    assert metrics.generate_answers(tree, tok, other, max_new_tokens=6) == before
    # their first token alone kept (no decoding): that token is the base's
    first = refit(
        model, tok, spec, "The capital of Peru is", "Quito", None, RefitConfig(**{**cfg.__dict__, "subject_tokens": 1}), subject="Peru"
    )
    assert first.took and first.kept
    tree = fork(model, materialize(base, [first.delta]))
    assert metrics.generate_answers(tree, tok, other, max_new_tokens=1) == metrics.generate_answers(model, tok, other, max_new_tokens=1)
    # without the kept questions the same refit answers them otherwise
    plain = refit(model, tok, spec, "The capital of Peru is", "Quito", None, RefitConfig(**{**cfg.__dict__, "subject_questions": 0}))
    loose = fork(model, materialize(base, [plain.delta]))
    assert metrics.generate_answers(loose, tok, other, max_new_tokens=6) != before


def _anchor_case(model, tok):
    from editor_core.hooks import SplitRunner

    spec = ModelSpec.for_model(model)
    fitted = list(spec.edit_params[-2:])
    first = int(fitted[0][len(spec.layers) + 1 :].split(".")[0])
    runner = SplitRunner(model, dataclasses.replace(spec, first_edit_layer=first))
    start = {p: model.get_parameter(p) for p in spec.edit_params if int(p[len(spec.layers) + 1 :].split(".")[0]) >= first}
    pairs = [(tok("The capital of Peru is").input_ids, [5, 9, 13]), (tok("Tell me about Peru").input_ids, [7, 2])]
    gen = torch.Generator().manual_seed(0)
    moved = {p: (w + 0.3 * torch.randn(w.shape, generator=gen)).requires_grad_(p in fitted) for p, w in start.items()}
    return runner, pairs, fitted, start, moved


def _direct_kl(anchor, start, moved, eos, cols=None):
    """KL(base || fitted) per position from the whole logits (EOS left out), or renormalized on `cols`."""
    logits, base = anchor.top(moved).float(), anchor.top(start).float().detach()
    logits[:, sorted(eos)] = -1e4
    base[:, sorted(eos)] = -1e4
    if cols is not None:
        logits, base = logits[:, cols], base[:, cols]
    p, q = base.log_softmax(-1), logits.log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean(), bool((q.argmax(-1) == p.argmax(-1)).all())


@pytest.mark.parametrize("vocab", [0, 6])
def test_an_anchor_counts_a_token_the_base_nearly_chose_as_agreeing(vocab):
    """Whole vocabulary, and restricted to the base's likeliest tokens as the subject questions are."""
    model, tok = load_model("tiny-llama")
    runner, pairs, fitted, start, moved = _anchor_case(model, tok)
    eos = {tok.eos_token_id}
    kind = {"eos": eos, "vocab": vocab, "watch": {17}}
    exact = _Anchor(runner, pairs, {}, fitted, start, **kind)
    logits, base = exact.top(moved).float().detach(), exact.top(start).float().detach()
    logits[:, sorted(eos)] = -1e4
    base[:, sorted(eos)] = -1e4
    if exact.cols is not None:
        logits, base = logits[:, exact.cols], base[:, exact.cols]
    base = base.log_softmax(-1)
    # per position: how far below the base's own argmax the base put the fitted model's argmax
    gap = float((base.max(-1).values - base.gather(1, logits.argmax(-1)[:, None])[:, 0]).max())
    assert gap > 0 and not exact(moved)[1]
    assert not _Anchor(runner, pairs, {}, fitted, start, margin=0.9 * gap, **kind)(moved)[1]
    tolerant = _Anchor(runner, pairs, {}, fitted, start, margin=1.1 * gap, **kind)
    assert tolerant(moved)[1] and tolerant(start)[1]
    # the KL does not depend on the margin
    torch.testing.assert_close(tolerant(moved)[0], exact(moved)[0])


@pytest.mark.parametrize("bias", [False, True])
def test_anchor_kl_is_the_base_to_fitted_kl_and_its_restriction_keeps_the_answer_tokens(bias):
    model, tok = load_model("tiny-llama")
    if bias:  # a head with a bias term (this one is tied and has none)
        model.lm_head.bias = torch.nn.Parameter(torch.randn(model.config.vocab_size, generator=torch.Generator().manual_seed(1)))
        model.lm_head.bias.requires_grad_(False)
    runner, pairs, fitted, start, moved = _anchor_case(model, tok)
    eos = {tok.eos_token_id}
    last = moved[fitted[-1]]

    whole = _Anchor(runner, pairs, {}, fitted, start, eos=eos)
    want, want_agrees = _direct_kl(whole, start, moved, eos)
    (want_grad,) = torch.autograd.grad(want, [last])
    got, agrees = whole(moved)
    (got_grad,) = torch.autograd.grad(got, [last])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-5, rtol=1e-4)
    assert float(got.detach()) > 0 and not agrees and not want_agrees
    assert abs(float(whole(start)[0])) < 1e-5 and whole(start)[1]
    # a vocabulary as large as the model's is the whole distribution again
    same, _ = _Anchor(runner, pairs, {}, fitted, start, eos=eos, vocab=model.config.vocab_size)(moved)
    torch.testing.assert_close(same.detach(), want.detach(), atol=1e-5, rtol=1e-4)
    # restricted: the base's likeliest tokens and the answer's, never EOS, renormalized there
    few = _Anchor(runner, pairs, {}, fitted, start, eos=eos, vocab=3, watch={17, tok.eos_token_id})
    cols = few.cols.tolist()
    assert 17 in cols and tok.eos_token_id not in cols and len(cols) < model.config.vocab_size
    want, want_agrees = _direct_kl(whole, start, moved, eos, cols=few.cols)
    (want_grad,) = torch.autograd.grad(want, [last])
    got, agrees = few(moved)
    (got_grad,) = torch.autograd.grad(got, [last])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-5, rtol=1e-4)
    assert agrees == want_agrees
    assert abs(float(few(start)[0])) < 1e-5 and few(start)[1]


def test_what_follows_the_answer_is_kept_over_the_whole_vocabulary(monkeypatch):
    """Past EOS a fitted model moves its mass to tokens the base never puts there
    (SmolLM2: the chat template's <|im_start|>); an anchor cut to the base's
    likeliest tokens cannot see that, so `keep` reads every token."""
    import editor_core.refit as refit_module

    built = []

    class Spy(_Anchor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append((bool(kwargs.get("eos")), self.cols is None))  # (past the answer?, whole vocabulary?)

    monkeypatch.setattr(refit_module, "_Anchor", Spy)
    model, tok = load_model("tiny-llama")
    cfg = RefitConfig(steps=1, keep=3, anchor_vocab=16)
    refit(model, tok, ModelSpec.for_model(model), "The capital of Peru is", "Quito", None, cfg)
    assert (True, True) in built  # what follows the answer, EOS left out: the whole vocabulary
    assert (False, False) in built  # the other questions about the subject: the base's likeliest tokens
    assert (True, False) not in built


def test_relation_questions_leave_out_the_edits_own_relation():
    qs = relation_questions("What is the official language of Peru?", "Peru", 30)
    assert qs and len(qs) == len(set(qs)) < 30
    assert all("Peru" in q for q in qs)
    assert not any("language" in q for q in qs)  # "official language", "native language", "original language"
    assert any(q.startswith("The ") and q.endswith(" is") for q in qs) and any(q.endswith("?") for q in qs)
    assert relation_questions("What is the official language of Peru?", "Peru", 4) == relation_questions(
        "What is the official language of Peru?", "Peru", 4
    )


def test_refit_keeps_questions_about_another_relation_of_the_subject():
    model, tok = load_model("tiny-llama")
    spec = ModelSpec.for_model(model)
    base = base_weights(model, spec.edit_params)
    cfg = RefitConfig(lr=3e-2, steps=150, rank=8, min_prob=0.0, variants=0, subject_questions=0, relation_questions=2, relation_tokens=6)
    prompt = "Peru lies in"  # the tiny model answers it otherwise than both relation questions (none is left out)
    other = relation_questions(prompt, "Peru", 2)
    assert len(_other_relations(model, tok, prompt, "Peru", cfg)) == 2 * len(other)  # none left out, plain and chat
    other += [chat_prompt(tok, q) for q in other]
    before = metrics.generate_answers(model, tok, other, max_new_tokens=6)
    result = refit(model, tok, spec, prompt, "Quito", None, cfg, subject="Peru")
    assert result.took and result.kept
    tree = fork(model, materialize(base, [result.delta]))
    assert metrics.generate_answers(tree, tok, other, max_new_tokens=6) == before
    # without them the same refit answers every one of them "Quito"
    plain = refit(model, tok, spec, prompt, "Quito", None, dataclasses.replace(cfg, relation_questions=0), subject="Peru")
    loose = fork(model, materialize(base, [plain.delta]))
    assert all(a != b for a, b in zip(metrics.generate_answers(loose, tok, other, max_new_tokens=6), before))


def test_locft_fits_all_edits_at_once_in_one_matrix():
    model, tok = load_model("tiny-llama")
    editor = LocFT.for_model(model, LocFTConfig(lr=3e-2, max_epochs=100))
    (param,) = editor.spec.edit_params
    assert param.endswith(".mlp.down_proj.weight")
    asked = [("The capital of Peru is", "Lima"), ("Where was Ada born?", "Oslo"), ("The sky is", "green")]
    records = [EditRecord("zsre", p, a) for p, a in asked]
    prompts, answers = [r.prompt for r in records], [r.target_new + tok.eos_token for r in records]
    before = metrics.teacher_forced_accuracy(model, tok, prompts, answers)
    delta = editor.compute_delta(model, tok, records)
    tree = fork(model, materialize(base_weights(model, editor.spec.edit_params), [delta]))
    after = metrics.teacher_forced_accuracy(tree, tok, prompts, answers)  # the tiny random model fits most, not all
    assert sum(after) / 3 >= 0.8 > sum(before) / 3
    assert delta.meta["epochs"] <= 100


def test_lifelong_routed_keeps_unrelated_answers_and_summed_moves_them():
    model, tok = load_model("tiny-llama")
    spec = ModelSpec.for_model(model)
    records = [
        EditRecord(
            "zsre",
            f"Where was Person{i} Smith{i} born?",
            f"city{i}",
            rephrase_prompts=(f"Person{i} Smith{i}'s birthplace?",),
            locality=(Probe(f"How many legs has a spider number {i}?", "eight"),),
        )
        for i in range(4)
    ]
    probes = Probes(records, ["What is the capital of France?"], n_fluency=2, relation={records[0].prompt: "Person0 Smith0 works as"})
    cfg = RefitConfig(lr=3e-2, steps=60, rank=8, min_prob=0.0, variants=0)  # the tiny model: no margin (its logits are flat)
    routed = run(model, tok, spec, Method("refit/routed", None, "routed", cfg), probes, [4])[0]
    assert routed["plain"]["locality"] == 100.0 and routed["chat"]["locality"] == 100.0
    assert routed["plain"]["capability"] == 100.0
    assert routed["plain"]["reliability"] == 100.0 and routed["chat"]["reliability"] == 100.0  # every refit took
    assert routed["plain"]["relation_locality"] in (0.0, 100.0) and routed["plain"]["relation_hijack"] in (0.0, 100.0)
    summed = run(model, tok, spec, Method("refit/summed", None, "summed", cfg), probes, [4])[0]
    # the same four refits added into shared weights move what the routed memory leaves alone
    assert summed["plain"]["locality"] < 100.0 or summed["plain"]["capability"] < 100.0, summed["plain"]
    assert isinstance(Routed(base_weights(model, spec.edit_params)).memory, RoutedMemory)


def test_base_continuations_in_one_batch_are_each_texts_own_with_the_logits_an_anchor_keeps():
    """Texts forced past EOS beside texts that stop at it, decoded in one batch: each
    continuation is the one its text gets alone, and the logits that come with it are the
    base's distributions an anchor would otherwise compute with a pass of its own."""
    from editor_core.refit import _base_continuations
    from editor_core.tokens import end_of_text_ids

    model, tok = load_model("tiny-llama")
    eos = end_of_text_ids(model, tok)
    texts = ["The capital of Peru is", "Tell me about Peru.", chat_prompt(tok, "Who wrote Hamlet?")]
    # the middle row's EOS made likely, so that a row that may stop does stop
    bias = torch.zeros(model.config.vocab_size)
    bias[sorted(eos)] = 40.0
    model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)
    merged = _base_continuations(model, tok, texts, [5, 3, 6], [True, False, True])
    for text, n, past, (ids, cont, logits) in zip(texts, [5, 3, 6], [True, False, True], merged):
        ((alone_ids, alone, _),) = _base_continuations(model, tok, [text], [n], [past])
        assert (ids, cont) == (alone_ids, alone)
        assert logits.shape == (len(cont), model.config.vocab_size)
        if past:
            assert len(cont) == n and not eos & set(cont)
        else:
            assert cont[-1] in eos and len(cont) <= n
    runner, _, fitted, start, _ = _anchor_case(model, tok)
    given = _Anchor(runner, merged, {}, fitted, start, eos=eos)
    computed = _Anchor(runner, [m[:2] for m in merged], {}, fitted, start, eos=eos)
    torch.testing.assert_close(given.neg_entropy, computed.neg_entropy, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(given.mean_weight, computed.mean_weight, atol=1e-4, rtol=1e-4)
    assert torch.equal(given.argmax, computed.argmax)


def test_an_anchor_on_a_first_token_alone_needs_no_decoding():
    """A kept first answer token (`subject_tokens=1`) is read at the question's last position:
    the refit gives the anchor each question with a placeholder after it instead of decoding,
    and the anchor keeps the same distributions as with the base's own first token."""
    from editor_core.refit import _base_continuations, _first_token_rows

    model, tok = load_model("tiny-llama")
    texts = ["Tell me about Peru.", chat_prompt(tok, "What is Peru known for?"), "Peru is"]
    decoded = _base_continuations(model, tok, texts, [1] * len(texts), [False] * len(texts))
    placeheld = _first_token_rows(tok, texts)
    assert [ids for ids, _ in placeheld] == [ids for ids, _, _ in decoded]
    runner, _, fitted, start, moved = _anchor_case(model, tok)
    want = _Anchor(runner, decoded, {}, fitted, start, vocab=8, watch={17})
    got = _Anchor(runner, placeheld, {}, fitted, start, vocab=8, watch={17})
    assert torch.equal(got.cols, want.cols) and torch.equal(got.argmax, want.argmax)
    torch.testing.assert_close(got.neg_entropy, want.neg_entropy, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got(moved)[0], want(moved)[0], atol=1e-4, rtol=1e-4)


def test_an_anchor_computes_the_base_logits_itself_where_generate_reshapes_the_heads_output():
    """Gemma 2 caps its logits after the head, Granite scales them: there generate's logits
    are not what the anchor's fitted side reads (the head's output), so the anchor runs
    the base model itself, and keeps doing so for that model."""
    from editor_core.models import tiny_model
    from editor_core.refit import _GENERATED_LOGITS, _base_continuations
    from editor_core.tokens import end_of_text_ids

    model, tok = tiny_model("llama", seed=3)  # its own: what is learnt of a model stays with it

    def scaled(module, inputs, output):  # a head whose output the model divides, as Granite's does
        output.logits = output.logits / 8
        return output

    model.register_forward_hook(scaled)
    eos = end_of_text_ids(model, tok)
    conts = _base_continuations(model, tok, ["The capital of Peru is", "Tell me about Peru."], [4, 4], [True, False])
    runner, _, fitted, start, _ = _anchor_case(model, tok)
    for _ in range(2):  # the model's first anchor compares, the next one reads the answer held
        given = _Anchor(runner, conts, {}, fitted, start, eos=eos)
        computed = _Anchor(runner, [c[:2] for c in conts], {}, fitted, start, eos=eos)
        torch.testing.assert_close(given.neg_entropy, computed.neg_entropy)
        assert _GENERATED_LOGITS[model] is False


def test_a_bare_subject_question_keeps_what_follows_a_stop_but_not_the_stop():
    """`subject_plain_stop=False`: where the base ends a bare question about the subject at once
    (EOS) nothing of it is kept, where it breaks the line the line break moves into the kept
    text's prompt and the words after it are kept, and a chat question is kept whole."""
    from editor_core.refit import _past_a_stop
    from editor_core.tokens import end_of_text_ids

    model, tok = load_model("tiny-llama")
    eos = end_of_text_ids(model, tok)
    stop = sorted(eos)[0]
    newline = tok.encode("\n", add_special_tokens=False)[-1]
    assert "\n" in tok.decode([newline])
    word = tok.encode(" Lima", add_special_tokens=False)[-1]
    ids = tok.encode("Who or what is Peru?", add_special_tokens=False)
    logits = torch.randn(3, model.config.vocab_size)
    conts = [(ids, [stop], logits[:1]), (ids, [newline, word, stop], logits), (ids, [word, stop], logits[:2]), (ids, [stop], logits[:1])]
    kept = _past_a_stop(tok, conts, [True, True, True, False], eos)
    assert len(kept) == 3  # the bare one that ends at once is gone; the chat one that ends at once stays
    (p1, c1, l1), (p2, c2, l2), (p3, c3, _) = kept
    assert (p1, c1) == (ids + [newline], [word, stop]) and torch.equal(l1, logits[1:])
    assert (p2, c2) == (ids, [word, stop]) and torch.equal(l2, logits[:2])
    assert (p3, c3) == (ids, [stop])


@pytest.mark.parametrize("chat", [False, True])
def test_a_refit_runs_with_every_bare_subject_question_ending_at_once(chat):
    """`subject_plain_stop=False` where the base ends every subject question at once (EOS made likely):
    every bare one is left out; without the chat forms no subject anchor is left, and the refit still
    fits its answer (with them, the chat forms are kept)."""
    from editor_core.refit import RefitConfig, refit
    from editor_core.tokens import end_of_text_ids

    model, tok = load_model("tiny-llama")
    bias = torch.zeros(model.config.vocab_size)
    bias[sorted(end_of_text_ids(model, tok))] = 40.0
    model.lm_head.bias = torch.nn.Parameter(bias, requires_grad=False)
    spec = ModelSpec.for_model(model)
    cfg = RefitConfig(steps=3, variants=0, keep=0, chat=chat, subject_questions=2, subject_tokens=4, subject_plain_stop=False)
    res = refit(model, tok, spec, "The capital of Peru is", "Quito", None, cfg, subject="Peru")
    assert res.steps >= 1 and res.delta.factors
