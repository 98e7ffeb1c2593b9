"""Routing keys from the model's hidden states (mean or last token, layers 2..30): can a
held-back rephrasing find its own edit among 1,000 validation records, and do unrelated
locality prompts stay apart? The numbers behind editor_core/routing.py's choice of
lexical keys (docs/RESULTS.md). About 15 minutes on a loaded 2-core CPU.

    python bench/router_keys_hidden.py
"""

import time

import torch

from editor_core.data.splits import load_task_split
from editor_core.models import load_model

torch.set_num_threads(2)
model, tok = load_model("smollm2-135m")
z = load_task_split("zsre", "val") + load_task_split("zsre", "train")[:400]
c = load_task_split("counterfact", "val")[:500]
recs = z + c
print(len(recs))
prompts = [r.prompt for r in recs]
reph = [(i, r.rephrase_prompts[0]) for i, r in enumerate(recs) if r.rephrase_prompts]
loc = [(i, r.locality[0].prompt) for i, r in enumerate(recs) if r.locality]
LAYERS = [2, 6, 10, 14, 18, 22, 26, 30]


@torch.no_grad()
def embed(texts, bs=32):
    out = {l: [] for l in LAYERS}
    last = {l: [] for l in LAYERS}
    for s in range(0, len(texts), bs):
        enc = tok(texts[s : s + bs], return_tensors="pt", padding=True, add_special_tokens=False)
        hs = model(**enc, output_hidden_states=True).hidden_states
        m = enc.attention_mask.unsqueeze(-1).float()
        n = enc.attention_mask.sum(1) - 1
        for l in LAYERS:
            h = hs[l]
            out[l].append((h * m).sum(1) / m.sum(1))
            last[l].append(h[torch.arange(h.shape[0]), n])
    return {("mean", l): torch.cat(out[l]) for l in LAYERS} | {("last", l): torch.cat(last[l]) for l in LAYERS}


tok.padding_side = "right"
t = time.time()
E = embed(prompts)
R = embed([p for _, p in reph])
L = embed([p for _, p in loc])
print("embed s", time.time() - t)
ri = torch.tensor([i for i, _ in reph])


def norm(x):
    x = x - 0  # no centering
    return torch.nn.functional.normalize(x, dim=-1)


for k in E:
    mu = E[k].mean(0, keepdim=True)
    for center in (False, True):
        e = norm(E[k] - (mu if center else 0))
        r = norm(R[k] - (mu if center else 0))
        l = norm(L[k] - (mu if center else 0))
        sr = r @ e.T
        top = sr.argmax(1)
        acc = (top == ri).float().mean().item()
        own = sr[torch.arange(len(ri)), ri]
        sl = (l @ e.T).max(1).values
        # threshold at the 99th pct of locality max sim; recall of rephrase own sim above it
        th = torch.quantile(sl, 0.99).item()
        rec = ((own > th) & (top == ri)).float().mean().item()
        print(k, "center" if center else "", f"top1 {acc:.3f}  rec@loc99 {rec:.3f} th {th:.3f}")
torch.save({"E": E, "R": R, "L": L, "ri": ri}, "runs/router_keys_hidden.pt")
