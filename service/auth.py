"""API keys: who may ask the model, who may change it.

A key is a random bearer token (`Authorization: Bearer iek_...`). The service
only ever holds its sha256, configured as `name:scope:sha256hex` lines (the
`api_keys_file` and `api_keys` settings; `instructedit keys create` writes
one). The tokens are 32 random bytes, so a plain sha256 is enough: a slow
password hash (scrypt) protects guessable secrets, and these are not.

Scopes, each including the ones before it:

    ask    generate and read (edits, metrics of an edit, the model, the docs)
    edit   also add edits and roll them back
    admin  everything (also Prometheus `/metrics`)

With no keys configured every caller is `anonymous` with admin scope, which
`check_bind` only allows on loopback unless `allow_unauthenticated` says so.

Attach to a router with one line, e.g. for read-only routes
`APIRouter(dependencies=[RequireAsk], responses=AUTH_RESPONSES)`; a route that
needs to know its caller takes `caller: EditCaller`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import Problem, responses
from .ratelimit import RateLimiter
from .settings import Settings

KEY_PREFIX = "iek_"
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
ANONYMOUS = "anonymous"


class Scope(StrEnum):
    ask = "ask"
    edit = "edit"
    admin = "admin"

    def allows(self, needed: "Scope") -> bool:
        order = list(Scope)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: Scope
    sha256: str  # hex digest of the token; the token itself is never stored

    def line(self) -> str:
        return f"{self.name}:{self.scope}:{self.sha256}"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and scope, or `anonymous` when auth is off."""

    name: str
    scope: Scope


class KeyConfigError(ValueError):
    """A key line that cannot be used (it would silently lock someone out)."""


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_keys(text: str, *, source: str) -> list[ApiKey]:
    """`name:scope:sha256hex` per line (or comma-separated); `#` starts a comment."""
    keys = []
    for n, raw in enumerate(re.split(r"[\n,]", text), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(":")
        if len(parts) != 3:
            raise KeyConfigError(f"{source}, entry {n}: expected name:scope:sha256hex, got {len(parts)} fields")
        name, scope, digest = (p.strip() for p in parts)
        if not NAME.match(name):
            raise KeyConfigError(f"{source}, entry {n}: key name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if scope not in Scope.__members__:
            raise KeyConfigError(f"{source}, entry {n}: scope {scope!r} is not one of {', '.join(Scope)}")
        if not SHA256_HEX.match(digest.lower()):
            raise KeyConfigError(f"{source}, entry {n}: the hash must be 64 hex digits (sha256 of the key)")
        keys.append(ApiKey(name, Scope(scope), digest.lower()))
    return keys


class KeyRing:
    """The configured keys; `find` compares a token's hash with every one of them
    in constant time (no early exit), so timing tells nothing about the hashes."""

    def __init__(self, keys: list[ApiKey]):
        names = [k.name for k in keys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise KeyConfigError(f"key names must be unique (edits record them): {', '.join(dupes)}")
        self.keys = tuple(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        keys = []
        if settings.api_keys_file is not None:
            path = Path(settings.api_keys_file)
            if not path.is_file():
                raise KeyConfigError(f"api_keys_file {path} does not exist")
            keys += parse_keys(path.read_text(), source=str(path))
        if settings.api_keys:
            keys += parse_keys(settings.api_keys, source="api_keys")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def find(self, token: str) -> ApiKey | None:
        digest = hash_key(token).encode()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256.encode()):
                found = key
        return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


class UnsafeBind(RuntimeError):
    """Serving beyond this machine with nobody checked."""


def check_bind(settings: Settings, keyring: KeyRing) -> None:
    if keyring.enabled or settings.allow_unauthenticated or is_loopback(settings.host):
        return
    raise UnsafeBind(
        f"refusing to serve on {settings.host} with no API keys: anyone who can reach the port could change the model. "
        "Create a key (`instructedit keys create NAME --scope admin --file keys.txt`, then INSTRUCTEDIT_API_KEYS_FILE=keys.txt), "
        "or set INSTRUCTEDIT_ALLOW_UNAUTHENTICATED=true if this really is what you want."
    )


@dataclass
class Auth:
    """What the dependencies need, kept on `app.state.auth` by `create_app`."""

    keyring: KeyRing
    limiter: RateLimiter


# --------------------------------------------------------------------------- dependencies

_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer iek_...`")
_CHALLENGE = 'Bearer realm="instructedit"'


async def authenticate(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """The caller, from its bearer token; 401 without a known key, 429 over its rate.
    FastAPI runs this once per request however many scope checks depend on it;
    async because it never blocks (a hash and a few comparisons), so no thread hop."""
    auth: Auth = request.app.state.auth
    if not auth.keyring.enabled:
        return Principal(ANONYMOUS, Scope.admin)
    if credentials is None:
        raise Problem(
            401, "unauthenticated", "this route needs an API key: Authorization: Bearer <key>", headers={"WWW-Authenticate": _CHALLENGE}
        )
    key = auth.keyring.find(credentials.credentials)
    if key is None:
        raise Problem(
            401, "bad-key", "the API key is not one this service knows",
            headers={"WWW-Authenticate": _CHALLENGE + ', error="invalid_token"'},
        )  # fmt: skip
    wait = auth.limiter.take(key.name)
    if wait is not None:
        raise Problem(
            429, "rate-limited", f"key {key.name!r} is over its rate limit; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )  # fmt: skip
    request.state.principal = Principal(key.name, key.scope)
    return request.state.principal


def require(scope: Scope):
    """A dependency: the caller, if its key has `scope` (or a wider one); else 403."""

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.scope.allows(scope):
            raise Problem(
                403, "insufficient-scope", f"key {principal.name!r} has scope '{principal.scope}'; this route needs '{scope}'",
                headers={"WWW-Authenticate": _CHALLENGE + f', error="insufficient_scope", scope="{scope}"'},
            )  # fmt: skip
        return principal

    check.__name__ = f"require_{scope}"
    return check


require_ask, require_edit, require_admin = require(Scope.ask), require(Scope.edit), require(Scope.admin)
RequireAsk, RequireEdit, RequireAdmin = Depends(require_ask), Depends(require_edit), Depends(require_admin)
AskCaller = Annotated[Principal, Depends(require_ask)]
EditCaller = Annotated[Principal, Depends(require_edit)]
AdminCaller = Annotated[Principal, Depends(require_admin)]
AUTH_RESPONSES = responses(401, 403, 429)
