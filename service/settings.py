"""The service's one settings object; the only module that reads the environment.

Every variable is `INSTRUCTEDIT_<FIELD>` (e.g. `INSTRUCTEDIT_STORE_DIR`), except
the queue's `REDIS_URL`, which keeps the name every Redis tool already uses.
Build one `Settings` at the edge (the CLI, a test) and pass it down:
`create_app(settings)` never looks at the environment itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import editor_core  # its __init__ is light: Settings stays importable without torch


def shipped_editor_path() -> Path:
    """Where the trained editor for the default model ships inside `editor_core`."""
    return Path(editor_core.__file__).parent / "artifacts" / "smollm2-135m" / "instructedit.safetensors"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTRUCTEDIT_", populate_by_name=True, extra="ignore")

    model: str = Field("smollm2-135m", description="model name for editor_core.models.load_model")
    editor_path: Path = Field(default_factory=shipped_editor_path, description="a saved editor (safetensors)")
    # An untrained editor makes edits that barely move the model; starting with
    # one silently would look like a working service that edits nothing.
    allow_untrained_editor: bool = Field(False, description="start with an untrained MEND editor when editor_path is missing")
    store_dir: Path = Field(Path("./instructedit-store"), description="the versioned store: the source of truth")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="Redis Streams queue; unset means the embedded in-process queue",
    )
    queue_name: str = Field("instructedit", description="prefix of every Redis key (then the store's id)")
    device: str | None = Field(None, description="torch device; default cuda when available, else cpu")
    dtype: str | None = Field(None, description="torch dtype name; default float32 on cpu, bfloat16 on cuda")
    # A rollback rebuilds from the newest snapshot whose active list is a prefix
    # of the target, so K bounds the deltas re-added per rebuild by about K.
    snapshot_every: int = Field(10, ge=0, description="snapshot the edited weights every K versions (0: never)")
    memory: Literal["routed", "summed"] = Field(
        "routed",
        description="how edits are held: `routed` (each question runs on the base plus at most one edit, chosen on "
        "its words; docs/ARCHITECTURE.md) or `summed` (every delta added into the weights; collapses after a few edits)",
    )
    router_threshold: float = Field(
        0.3,  # editor_core.routing.RouterConfig.threshold (not imported: Settings loads without torch)
        gt=0.0,
        le=1.0,
        description="routed: the similarity a question needs with one of an edit's questions to run on that edit, "
        "once it names that edit's subject (chosen on validation records, bench/router_keys.py)",
    )
    router_narrow_threshold: float = Field(
        0.1,  # editor_core.routing.RouterConfig.narrow_threshold
        ge=0.0,
        le=1.0,
        description="routed: while an edit is served by its quick fit (before its refit lands, or for good when the refit "
        "is off or did not take or failed), the similarity a question's words other than the subject's need with the edit's "
        "prompt or rephrasings for it to run on that edit (0: as wide as a refit edit)",
    )
    router_relation_check: bool = Field(
        True,  # editor_core.routing.RouterConfig.relation_check
        description="routed: an edit refuses a question about another relation of its subject (one that names a relation "
        "label such as 'official language' which the edit's own question does not use, and none of the edit's own "
        "relation words; editor_core.routing.RelationTable), which then runs as it would without that edit",
    )
    refit: bool = Field(
        True,
        description="routed: fit each edit's delta again in the background, from the editor's delta, until its "
        "prompt generates the target with a margin while other questions about its subject keep their answers "
        "(editor_core/refit.py); committed as a version of its own",
    )
    quick_refit: bool = Field(
        True,
        description="routed: fit the editor's delta briefly on the edit's own question before the edit is "
        "published, so that it shows in generated answers at once (about a second; editor_core.refit.QUICK); "
        "until the full refit (`refit`) replaces it in the background, only questions worded like the edit's own reach it "
        "(`router_narrow_threshold`); with `refit` off the quick fit stays, narrow",
    )
    max_new_tokens: int = Field(256, ge=1, description="cap on max_new_tokens per generation")
    # Each cached version holds its own copy of the edited weights (SmolLM2-135M:
    # 3 blocks' MLP, 30.4 MB in fp32); the rest of the model is shared.
    version_cache_size: int = Field(
        4, ge=1, description="versions kept built for pinned requests (LRU); older ones are rebuilt from the store"
    )
    max_concurrent_generations: int = Field(2, ge=1, description="generations running at once; more wait")
    max_tries: int = Field(3, ge=1, description="tries per job before it is marked failed (crashes count)")
    # Authentication (service/auth.py). Keys are bearer tokens; only their sha256 is configured.
    api_keys_file: Path | None = Field(None, description="file of `name:scope:sha256hex` lines (`instructedit keys create` writes them)")
    api_keys: str | None = Field(None, description="the same lines, separated by commas or newlines (added to the file's)")
    # Without keys anyone who reaches the port can change the weights; on loopback that is
    # only this machine, anywhere else the operator has to say so.
    allow_unauthenticated: bool = Field(False, description="serve on a non-loopback host with no keys configured")
    rate_limit_per_second: float = Field(20.0, ge=0, description="requests per second per key, refilled continuously (0: no limit)")
    rate_limit_burst: int = Field(40, ge=1, description="token-bucket size per key: the requests a key may make at once")
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="largest request body accepted; larger ones get 413")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {value!r}")
        return value
