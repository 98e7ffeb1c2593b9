"""The store's files: deltas named by their content, and weight snapshots.

    deltas/<sha256>.safetensors    one per committed edit (editor_core.delta.Delta)
    snapshots/v<N>.safetensors     the edited weights of version N (a cache)

Every file is written to a temporary name, fsynced and renamed, so a crash
leaves either the whole file or none; a delta's name is its content hash, so
writing it twice is writing the same bytes.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from editor_core.delta import Delta

# Deltas kept in memory. A SmolLM2 delta is ~1-2 MB (rank = edit tokens), and a
# rebuild re-adds the active deltas after the best snapshot.
DELTA_CACHE = 256


class Artifacts:
    def __init__(self, root: Path):
        self.deltas_dir = root / "deltas"
        self.snapshots_dir = root / "snapshots"
        for d in (self.deltas_dir, self.snapshots_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[str, Delta] = OrderedDict()  # recently used deltas, CPU
        self._lock = threading.Lock()

    def write_delta(self, delta: Delta) -> str:
        """Write (once) `deltas/<sha256>.safetensors`; returns the sha256."""
        sha = delta.sha256()
        path = self.deltas_dir / f"{sha}.safetensors"
        if not path.exists():
            atomic_write(path, delta.save)
        self._remember(sha, delta.to("cpu"))
        return sha

    def read_delta(self, sha: str) -> Delta:
        delta = self._cache.get(sha) or Delta.load(self.deltas_dir / f"{sha}.safetensors")
        self._remember(sha, delta)
        return delta

    def _remember(self, sha: str, delta: Delta) -> None:
        with self._lock:
            self._cache[sha] = delta
            self._cache.move_to_end(sha)
            while len(self._cache) > DELTA_CACHE:
                self._cache.popitem(last=False)

    def write_snapshot(self, version: int, active: list[str], weights: dict[str, torch.Tensor]) -> str:
        """The file of a snapshot (self-describing); returns its name."""
        name = f"v{version:08d}.safetensors"
        tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        meta = {"format": "instructedit-snapshot", "version": str(version), "active": json.dumps(active)}
        atomic_write(self.snapshots_dir / name, lambda p: save_file(tensors, str(p), metadata=meta))
        return name

    def read_snapshot(self, name: str, device: torch.device) -> dict[str, torch.Tensor]:
        return load_file(str(self.snapshots_dir / name), device=str(device))


def atomic_write(path: Path, write) -> None:
    """write(tmp) then fsync and rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk is not left fuller
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
