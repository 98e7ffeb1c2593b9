"""The decoding loop (service/generation.py) against editor_core's greedy generation."""

import threading

import torch

from editor_core.metrics import generate_greedy
from service.generation import Sampling, encode_prompt, generate, pick


def test_greedy_matches_editor_core(tiny):
    model, tok = tiny
    for prompt in ("The capital of France is", "x"):
        ids = encode_prompt(tok, prompt, max_positions=512, max_new_tokens=8)
        ours = generate(model, tok, ids, Sampling(8))
        assert ours.text == generate_greedy(model, tok, [prompt], max_new_tokens=8)[0]
        assert ours.tokens <= 8 and ours.finish_reason in ("length", "eos")


def test_streamed_chunks_add_up_and_seeds_repeat(tiny):
    model, tok = tiny
    ids = encode_prompt(tok, "hello", max_positions=512, max_new_tokens=10)
    chunks = []
    s = Sampling(10, temperature=1.0, top_p=0.8, seed=7)
    out = generate(model, tok, ids, s, on_text=chunks.append)
    assert "".join(chunks) == out.text
    assert generate(model, tok, ids, s).text == out.text
    cancel = threading.Event()
    cancel.set()
    assert generate(model, tok, ids, s, cancel=cancel).tokens == 0


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    picks = {pick(logits, Sampling(1, temperature=1.0, top_p=0.7), g) for _ in range(200)}
    assert picks == {0, 1}
    assert pick(logits, Sampling(1), g) == 0
    assert {pick(logits, Sampling(1, temperature=1.0, top_p=0.01), g) for _ in range(20)} == {0}


def test_long_prompts_keep_their_end():
    class Tok:
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(range(len(text)))}

    assert encode_prompt(Tok(), "x" * 100, max_positions=64, max_new_tokens=16) == list(range(52, 100))


def test_tiny_and_huge_temperatures_never_give_nan():
    """schemathesis found temperature 2.2e-313 (0 in fp32): it must sample, not 500."""
    logits = torch.tensor([1.0, 3.0, -2.0, 0.5])
    g = torch.Generator().manual_seed(0)
    for t in (2.2250738585e-313, 1e-45, 1e-5, 1e-4, 1e-3):
        assert pick(logits, Sampling(1, temperature=t), g) == 1
    assert 0 <= pick(logits, Sampling(1, temperature=5.0, top_p=1e-300), g) < 4
