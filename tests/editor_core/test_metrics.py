import copy
import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from editor_core import metrics as M
from editor_core.tokens import IGNORE, encode_pairs

# --------------------------------------------------------------------------
# Pure cores
# --------------------------------------------------------------------------


def _logits_predicting(preds: list[list[int]], vocab: int = 5) -> torch.Tensor:
    """Logits whose argmax at [b, t] is preds[b][t]."""
    B, T = len(preds), len(preds[0])
    logits = torch.zeros(B, T, vocab)
    for b in range(B):
        for t in range(T):
            logits[b, t, preds[b][t]] = 1.0
    return logits


def test_token_accuracy_two_of_three():
    # position t predicts label t; answer at positions 1..3, padding elsewhere
    labels = torch.tensor([[IGNORE, 2, 3, 4, IGNORE]])
    logits = _logits_predicting([[0, 2, 3, 0, 4]])
    acc = M.token_accuracy_from_logits(logits, labels)
    assert acc.shape == (1,)
    assert acc.item() == pytest.approx(2 / 3)


def test_token_accuracy_ignores_padding_and_prompt_positions():
    labels = torch.tensor(
        [
            [IGNORE, 1, 1, IGNORE, IGNORE],  # 2 answer tokens, then padding
            [IGNORE, IGNORE, IGNORE, 3, IGNORE],  # 1 answer token
        ]
    )
    # predictions outside the answer are all "wrong" and must not count
    logits = _logits_predicting([[4, 1, 0, 4, 4], [4, 4, 4, 3, 4]])
    acc = M.token_accuracy_from_logits(logits, labels)
    assert acc.tolist() == pytest.approx([0.5, 1.0])


def test_token_accuracy_on_encode_pairs_batch():
    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": ([9] if add_special_tokens else []) + [len(w) for w in text.split()]}

    batch = encode_pairs(Tok(), ["a bb", "ccc"], ["dddd eeeee", "ff"])
    # row 0: [9, 1, 2, 4, 5]; row 1: [9, 3, 2, 0(pad), 0(pad)]
    assert batch.labels.tolist() == [[IGNORE, IGNORE, 4, 5, IGNORE], [IGNORE, 2, IGNORE, IGNORE, IGNORE]]
    # a "model" that predicts the next input token everywhere is right on all answer tokens
    shifted = torch.cat([batch.input_ids[:, 1:], torch.zeros(2, 1, dtype=torch.long)], dim=1)
    logits = torch.nn.functional.one_hot(shifted, 10).float()
    assert M.token_accuracy_from_logits(logits, batch.labels).tolist() == [1.0, 1.0]
    assert [t.tolist() for t in M.answer_argmax_from_logits(logits, batch.labels)] == [[4, 5], [2]]


def test_answer_argmax_from_logits():
    labels = torch.tensor([[IGNORE, 2, 3, IGNORE], [IGNORE, IGNORE, 1, IGNORE]])
    logits = _logits_predicting([[0, 2, 4, 1], [3, 3, 0, 2]])
    out = M.answer_argmax_from_logits(logits, labels)
    assert [t.tolist() for t in out] == [[2, 4], [0]]


def test_agreement():
    pre = [torch.tensor([1, 2, 3, 4]), torch.tensor([5]), torch.tensor([7, 8])]
    post = [torch.tensor([1, 0, 3, 0]), torch.tensor([5]), torch.tensor([0, 0])]
    assert M.agreement(pre, post) == [0.5, 1.0, 0.0]
    with pytest.raises(ValueError):
        M.agreement(pre, post[:2])
    with pytest.raises(ValueError):
        M.agreement([torch.tensor([1, 2])], [torch.tensor([1])])


def test_ngram_entropy_hand_values():
    # one repeated bigram and trigram: zero entropy
    assert M.ngram_entropy("a a a a") == 0.0
    # 5 distinct words: 4 distinct bigrams (2 bits), 3 distinct trigrams (log2 3)
    text = "one two three four five"
    assert M.ngram_entropy(text, ns=(2,), weights=(1.0,)) == pytest.approx(2.0)
    assert M.ngram_entropy(text, ns=(3,), weights=(1.0,)) == pytest.approx(math.log2(3))
    expected = (2 / 3 * 2.0 + 4 / 3 * math.log2(3)) / 2
    assert M.ngram_entropy(text) == pytest.approx(expected)
    # "x y x y x": bigrams xy,yx,xy,yx -> 1 bit; trigrams xyx,yxy,xyx -> H(2/3,1/3)
    h3 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert M.ngram_entropy("x y x y x") == pytest.approx((2 / 3 * 1.0 + 4 / 3 * h3) / 2)
    # too short for any n-gram
    assert M.ngram_entropy("") == 0.0
    assert M.ngram_entropy("word") == 0.0


def test_word_tokenize_splits_punctuation_like_nltk():
    assert M.word_tokenize("Paris, France. It's 3.5 km; don't go...") == [
        "Paris", ",", "France", ".", "It", "'s", "3.5", "km", ";", "do", "n't", "go", "...",
    ]
    # punctuation tokens take part in the n-grams: "a , a , a" has bigrams (a ,),(, a) x2 -> 1 bit
    assert M.ngram_entropy("a, a, a", ns=(2,), weights=(1.0,)) == pytest.approx(1.0)


def test_normalize_answer():
    assert M.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert M.normalize_answer("  an Apple, a day ") == "apple day"
    assert M.normalize_answer("Theatre") == "theatre"  # articles only as whole words


@pytest.mark.parametrize(
    "generated, answer, expected",
    [
        ("Paris", "Paris", 1.0),
        (" paris", "Paris", 1.0),  # case, leading space of a continuation
        ("The Paris.", "Paris", 1.0),  # article, punctuation
        ("Paris", "the Paris", 1.0),
        ("Paris, the capital of France.", "Paris", 1.0),  # continuation goes on
        ("New York City is big", "New York", 1.0),
        ("Parisian food", "Paris", 0.0),  # prefix of a longer word
        ("It is Paris", "Paris", 0.0),  # must begin with the answer
        ("London", "Paris", 0.0),
        ("", "Paris", 0.0),
        ("York", "New York", 0.0),
    ],
)
def test_exact_match(generated, answer, expected):
    assert M.exact_match(generated, answer) == expected


def test_summarize():
    assert M.summarize([]) is None
    assert M.summarize([1.0, 0.0, 0.5, 0.5]) == pytest.approx(50.0)
    assert M.summarize([2 / 3]) == pytest.approx(200 / 3)


# --------------------------------------------------------------------------
# Tiny random Llama + offline word-level tokenizer
# --------------------------------------------------------------------------

WORDS = (
    "the capital of france is paris london berlin rome city river a an and in on at "
    "who what where when was born plays football for team president country language "
    "speaks english french german lives near big small old new"
).split()


@pytest.fixture(scope="module")
def tiny():
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
    )
    model = LlamaForCausalLM(cfg).eval()
    # Keep greedy continuations to ordinary words so that decoding and
    # re-encoding a continuation is lossless.
    with torch.no_grad():
        model.lm_head.weight[: len(specials)] = 0.0
        model.lm_head.weight[len(specials) :] *= 50.0
    return model, tok


PROMPTS = [
    "the capital of france is",
    "who plays football for",
    "a big old city near the river",
    "what language",
    "where was the president born and when",
]


def test_tokenizer_roundtrip(tiny):
    _, tok = tiny
    ids = tok("the capital of", add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 4
    assert tok.decode(ids[1:]) == "the capital of"


def test_greedy_continuation_scores_one_and_batching_is_invariant(tiny):
    model, tok = tiny
    gen1 = M.generate_greedy(model, tok, PROMPTS, max_new_tokens=4, batch_size=1)
    gen4 = M.generate_greedy(model, tok, PROMPTS, max_new_tokens=4, batch_size=4)
    assert gen1 == gen4  # left padding does not change the greedy continuation
    for g in gen1:
        words = g.split()
        assert len(words) == 4 and all(w in WORDS for w in words), g

    acc1 = M.teacher_forced_accuracy(model, tok, PROMPTS, gen1, batch_size=1)
    acc4 = M.teacher_forced_accuracy(model, tok, PROMPTS, gen1, batch_size=4)
    assert acc1 == [1.0] * len(PROMPTS)
    assert acc4 == acc1

    # a wrong answer scores below 1, identically at every batch size
    wrong = ["rome rome" if g.startswith("paris") else "paris london" for g in gen1]
    w1 = M.teacher_forced_accuracy(model, tok, PROMPTS, wrong, batch_size=1)
    w4 = M.teacher_forced_accuracy(model, tok, PROMPTS, wrong, batch_size=3)
    assert w1 == w4
    assert all(0.0 <= v <= 1.0 for v in w1)

    # exact match: the first word of the continuation is a hit, another word is not
    first = [g.split()[0] for g in gen1]
    assert M.generation_exact_match(model, tok, PROMPTS, first, batch_size=4) == [1.0] * len(PROMPTS)
    other = ["rome" if f == "paris" else "paris" for f in first]
    assert M.generation_exact_match(model, tok, PROMPTS, other, batch_size=2) == [0.0] * len(PROMPTS)

    # fluency is the n-gram entropy of the greedy continuation
    assert M.fluency(model, tok, PROMPTS, max_new_tokens=4, batch_size=4) == [M.ngram_entropy(g) for g in gen1]


def test_answer_argmax_self_agreement_and_locality(tiny):
    model, tok = tiny
    answers = ["paris", "the team", "london and berlin", "english french german", "in rome"]
    pre1 = M.answer_argmax(model, tok, PROMPTS, answers, batch_size=1)
    pre4 = M.answer_argmax(model, tok, PROMPTS, answers, batch_size=4)
    assert [t.tolist() for t in pre1] == [t.tolist() for t in pre4]
    assert [len(t) for t in pre1] == [1, 2, 3, 3, 2]
    assert M.agreement(pre1, pre4) == [1.0] * len(PROMPTS)
    assert M.locality(pre1, model, tok, PROMPTS, answers, batch_size=2) == [1.0] * len(PROMPTS)

    # an "edit" that changes the output layer changes the argmax somewhere
    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.lm_head.weight.copy_(edited.lm_head.weight.roll(1, dims=0))
    loc = M.locality(pre1, edited, tok, PROMPTS, answers, batch_size=4)
    assert len(loc) == len(PROMPTS) and all(0.0 <= v <= 1.0 for v in loc)
    assert loc == M.agreement(pre1, M.answer_argmax(edited, tok, PROMPTS, answers, batch_size=1))
    assert min(loc) < 1.0
