"""Text generation on one published snapshot, whole or streamed.

A small decoding loop of our own (KV cache, greedy or temperature/top-p
sampling) rather than `model.generate`: it takes a per-request
`torch.Generator`, so seeded requests stay reproducible while other requests
sample at the same time (the global RNG would mix them), and it yields text as
it goes, for server-sent events.

Every generation goes through `answer(Ask, tokenizer)`: an `Ask` carries the
snapshot and the user's question, and `tree_for` picks the module tree to run
on from them (the one place where routing by question hooks in).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Sequence

import torch
from sse_starlette import ServerSentEvent

from editor_core.tokens import end_of_text_ids

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
    finish_reason: str  # "length" | "eos" | "stop" (a stop string was reached)


def encode_prompt(tokenizer, prompt: str, *, max_positions: int | None, max_new_tokens: int, special: bool = True) -> list[int]:
    """Prompt token ids, keeping the last ones when prompt + answer would not fit.
    `special=False` for text a chat template made (it holds its own special tokens)."""
    ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    if max_positions:
        ids = ids[-max(1, max_positions - max_new_tokens) :]
    return ids


def max_positions(model) -> int | None:
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


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


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the earliest stop string begins in `text`, or None."""
    found = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(found) if found else None


def _held(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of `text` could begin a stop string (not shown yet)."""
    held = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:n]):
                held = n
                break
    return held


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompt_ids: list[int],
    s: Sampling,
    *,
    stop: Sequence[str] = (),
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> Generated:
    """Decode up to `s.max_new_tokens` tokens. `on_text` gets the text as it
    grows, holding back an incomplete UTF-8 character and anything that could
    be the start of a stop string; the text ends before the first stop string
    (finish_reason "stop")."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(s.seed if s.seed is not None else secrets.randbits(63))
    eos = end_of_text_ids(model, tokenizer)
    ids: list[int] = []
    text, shown, finish, cache = "", 0, "length", None

    def show(upto: int) -> None:
        nonlocal shown
        if upto > shown and on_text is not None:
            on_text(text[shown:upto])
        shown = max(shown, upto)

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
        ids.append(token)
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        if not decoded.endswith("\ufffd"):  # an incomplete character waits for its next byte
            text = decoded
        cut = first_stop(text, stop)
        if cut is not None:
            text, finish = text[:cut], "stop"
            break
        show(len(text) - _held(text, stop))
        step = torch.tensor([[token]], device=device)
    if finish != "stop":
        text = tokenizer.decode(ids, skip_special_tokens=True)  # an incomplete character stays as U+FFFD
        cut = first_stop(text, stop)
        if cut is not None:
            text, finish = text[:cut], "stop"
    show(len(text))
    return Generated(text, len(ids), finish)


@dataclass(frozen=True)
class Ask:
    """One generation, resolved: the version it runs on, the user's question
    (chat: the last user message; completion: the prompt), its token ids."""

    snapshot: Snapshot
    query: str
    prompt_ids: list[int]
    sampling: Sampling
    stop: tuple[str, ...] = ()


def tree_for(snapshot: Snapshot, query: str):
    """The module tree a request runs on: the snapshot's routed tree for this
    question when it has one (issue 11's `Snapshot.tree_for`), else its tree."""
    route = getattr(snapshot, "tree_for", None)
    return route(query) if route is not None else snapshot.model


def answer(ask: Ask, tokenizer, *, on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> Generated:
    """Every generation the service runs goes through here."""
    model = tree_for(ask.snapshot, ask.query)
    return generate(model, tokenizer, ask.prompt_ids, ask.sampling, stop=ask.stop, on_text=on_text, cancel=cancel)


async def answer_async(ask: Ask, tokenizer, *, slots: asyncio.Semaphore, on_done: Callable[[float], None]) -> Generated:
    """`answer` in a thread, once a generation slot is free."""
    async with slots:
        started = time.perf_counter()
        out = await asyncio.to_thread(answer, ask, tokenizer)
        on_done(time.perf_counter() - started)
    return out


async def stream_text(
    ask: Ask, tokenizer, *, slots: asyncio.Semaphore, on_done: Callable[[float], None]
) -> AsyncIterator[tuple[str, str | Generated]]:
    """("token", text) items as the answer grows, then ("done", Generated) or
    ("error", reason). A consumer that stops early stops the decoding thread at
    its next token."""
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
            post("done", answer(ask, tokenizer, on_text=lambda t: post("token", t), cancel=cancel))
        except Exception as e:  # reported to the client in the stream; it has already begun
            post("error", f"{type(e).__name__}: {e}")

    async with slots:
        started = time.perf_counter()
        worker = loop.run_in_executor(None, run)
        try:
            while True:
                kind, payload = await events.get()
                if kind == "done":
                    on_done(time.perf_counter() - started)
                yield kind, payload
                if kind != "token":
                    break
        finally:
            cancel.set()
            await asyncio.shield(worker)


async def stream_events(
    ask: Ask, tokenizer, *, slots: asyncio.Semaphore, on_done: Callable[[float], None]
) -> AsyncIterator[ServerSentEvent]:
    """`/generate`'s stream: `token` events ({"text"}), then one `done` event
    ({"text", "model_version", "tokens", "finish_reason"}), or one `error` event."""
    version = ask.snapshot.version
    async for kind, payload in stream_text(ask, tokenizer, slots=slots, on_done=on_done):
        if kind == "token":
            yield ServerSentEvent(json.dumps({"text": payload}), event="token")
        elif kind == "done":
            body = {"text": payload.text, "model_version": version, "tokens": payload.tokens, "finish_reason": payload.finish_reason}
            yield ServerSentEvent(json.dumps(body), event="done")
        else:
            yield ServerSentEvent(json.dumps({"detail": payload, "model_version": version}), event="error")
