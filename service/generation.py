"""Text generation on one published snapshot, whole or streamed.

A small decoding loop of our own (KV cache, greedy or temperature/top-p
sampling) rather than `model.generate`: it takes a per-request
`torch.Generator`, so seeded requests stay reproducible while other requests
sample at the same time (the global RNG would mix them), and it yields text as
it goes, for server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import torch
from sse_starlette import ServerSentEvent

from .state import Snapshot


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int
    finish_reason: str  # "length" | "eos"


def encode_prompt(tokenizer, prompt: str, *, max_positions: int | None, max_new_tokens: int) -> list[int]:
    """Prompt token ids, keeping the last ones when prompt + answer would not fit."""
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if max_positions:
        ids = ids[-max(1, max_positions - max_new_tokens) :]
    return ids


def max_positions(model) -> int | None:
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    return ids


# Below this a temperature samples the argmax anyway, and logits / T overflows fp32
# (schemathesis sent 2.2e-313, a subnormal that is 0 in fp32: 0/0 gave NaN probabilities and a 500).
GREEDY_BELOW = 1e-4


def pick(logits: torch.Tensor, s: Sampling, generator: torch.Generator) -> int:
    """The next token from fp32 CPU logits (V,): argmax, or nucleus sampling."""
    if s.temperature < GREEDY_BELOW:
        return int(logits.argmax())
    probs = torch.softmax((logits - logits.max()) / s.temperature, dim=-1)
    ordered, index = probs.sort(descending=True)
    keep = ordered.cumsum(0) - ordered < s.top_p  # the smallest set reaching top_p
    keep[0] = True  # always, even for a top_p that is 0 in fp32 (1e-300 is)
    choice = torch.multinomial(ordered * keep, 1, generator=generator)
    return int(index[choice])


class _Decoder:
    """Token ids to text increments, holding back an incomplete UTF-8 character."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.sent = tokenizer, [], ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        chunk, self.sent = text[len(self.sent) :], text
        return chunk

    def flush(self) -> str:
        """What is still held back at the end (an incomplete character stays as U+FFFD)."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        chunk, self.sent = text[len(self.sent) :], text
        return chunk


@torch.inference_mode()
def generate(
    model, tokenizer, prompt_ids: list[int], s: Sampling, *, on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None
) -> Generated:
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(s.seed if s.seed is not None else secrets.randbits(63))
    eos = _eos_ids(model, tokenizer)
    decoder, cache, finish = _Decoder(tokenizer), None, "length"
    step = torch.tensor([prompt_ids], device=device)
    for _ in range(s.max_new_tokens):
        if cancel is not None and cancel.is_set():
            break
        out = model(input_ids=step, cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        token = pick(out.logits[0, -1].float().cpu(), s, generator)
        if token in eos:
            finish = "eos"
            break
        chunk = decoder.push(token)
        if chunk and on_text is not None:
            on_text(chunk)
        step = torch.tensor([[token]], device=device)
    rest = decoder.flush()
    if rest and on_text is not None:
        on_text(rest)
    return Generated(decoder.sent, len(decoder.ids), finish)


async def stream_events(
    snapshot: Snapshot, tokenizer, prompt_ids: list[int], s: Sampling, *, slots: asyncio.Semaphore, on_done: Callable[[float], None]
) -> AsyncIterator[ServerSentEvent]:
    """`token` events ({"text"}), then one `done` event ({"text", "model_version",
    "tokens", "finish_reason"}), or one `error` event. A client that goes away
    stops the decoding thread at its next token."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def post(kind: str, payload) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is gone (shutdown); nobody is listening
            cancel.set()

    def run() -> None:
        try:
            post("done", generate(snapshot.model, tokenizer, prompt_ids, s, on_text=lambda t: post("token", t), cancel=cancel))
        except Exception as e:  # reported to the client as an event; the stream has already begun
            post("error", f"{type(e).__name__}: {e}")

    async with slots:
        started = time.perf_counter()
        worker = loop.run_in_executor(None, run)
        try:
            while True:
                kind, payload = await events.get()
                if kind == "token":
                    yield ServerSentEvent(json.dumps({"text": payload}), event="token")
                    continue
                if kind == "done":
                    on_done(time.perf_counter() - started)
                    body = {"text": payload.text, "model_version": snapshot.version, "tokens": payload.tokens, "finish_reason": payload.finish_reason}
                    yield ServerSentEvent(json.dumps(body), event="done")
                else:
                    yield ServerSentEvent(json.dumps({"detail": payload, "model_version": snapshot.version}), event="error")
                break
        finally:
            cancel.set()
            await asyncio.shield(worker)
