"""A party's config file, `party.toml`, in its own organisation's folder.

    id = "trc"
    role = "agency"                      # see ROLE_NAMES
    listen = "127.0.0.3:7001"            # where the server binds ("" for a client-only party)
    endpoint = "127.0.0.3:7001"          # what the registry lists and others dial
    database_url = ""                    # "" = state.db in this folder; or postgresql://...
    key_folder = "."                     # relative to this file
    fetch_registry_from = ["127.0.0.2:7000"]   # servers to follow the registry chain from
    trust_refresh_seconds = 2.0
    log_level = "INFO"
    log_format = "text"                  # or "json": one JSON object per line
    metrics_port = 0                     # 0 = no metrics endpoint
    health_probe = ""                    # e.g. "127.0.0.1:7801": health without TLS, local only

Invariants:
- Every problem is `InvalidArgument BAD_CONFIG` naming the file and the key; nothing is
  guessed for a missing id or role.
- Paths in the file are relative to the file's folder; nothing outside the key folder is
  read for secrets.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedscore.errors import InvalidArgument
from fedscore.v1.trust_pb2 import Role

ROLE_NAMES: dict[str, Role] = {
    "agency": Role.ROLE_AGENCY,
    "consent-registry": Role.ROLE_CONSENT_REGISTRY,
    "coordinator": Role.ROLE_COORDINATOR,
    "relying-party": Role.ROLE_RELYING_PARTY,
    "regulator": Role.ROLE_REGULATOR,
    "citizen-portal": Role.ROLE_CITIZEN_PORTAL,
    "policy-authority": Role.ROLE_POLICY_AUTHORITY,
    "helper-aggregator": Role.ROLE_HELPER_AGGREGATOR,
}
SERVER_ROLES = frozenset(
    {
        Role.ROLE_AGENCY,
        Role.ROLE_CONSENT_REGISTRY,
        Role.ROLE_COORDINATOR,
        Role.ROLE_HELPER_AGGREGATOR,
    }
)
DEFAULT_TRUST_REFRESH_SECONDS = 2.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


def role_name(role: Role) -> str:
    for name, value in ROLE_NAMES.items():
        if value == role:
            return name
    raise InvalidArgument(f"role {role} has no name", reason="BAD_CONFIG")


@dataclass(frozen=True)
class PartyConfig:
    """What one party needs to run, from its own folder."""

    path: Path
    id: str
    role: Role
    listen: str = ""
    endpoint: str = ""
    database_url: str = ""
    key_folder: Path = Path()
    fetch_registry_from: tuple[str, ...] = field(default_factory=tuple)
    trust_refresh_seconds: float = DEFAULT_TRUST_REFRESH_SECONDS
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_port: int = 0
    health_probe: str = ""

    @property
    def folder(self) -> Path:
        return self.path.parent

    def to_toml(self) -> str:
        key_folder = self.key_folder
        try:
            key_folder = key_folder.relative_to(self.folder)
        except ValueError:
            pass
        values: dict[str, Any] = {
            "id": self.id,
            "role": role_name(self.role),
            "listen": self.listen,
            "endpoint": self.endpoint,
            "database_url": self.database_url,
            "key_folder": str(key_folder) or ".",
            "fetch_registry_from": list(self.fetch_registry_from),
            "trust_refresh_seconds": float(self.trust_refresh_seconds),
            "log_level": self.log_level,
            "log_format": self.log_format,
            "metrics_port": int(self.metrics_port),
            "health_probe": self.health_probe,
        }
        # JSON strings, lists and numbers are valid TOML values.
        lines = [
            f"{name} = {json.dumps(value, ensure_ascii=False)}" for name, value in values.items()
        ]
        return "# fedscore party config (see docs/operations.md)\n" + "\n".join(lines) + "\n"


def _bad(path: Path, message: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {message}", reason="BAD_CONFIG")


def _text(path: Path, doc: dict[str, Any], name: str, default: str | None = None) -> str:
    value = doc.get(name, default)
    if value is None:
        raise _bad(path, f"{name!r} is required")
    if not isinstance(value, str):
        raise _bad(path, f"{name!r} must be a string")
    return value


def load_config(path: Path) -> PartyConfig:
    """Read and check `party.toml`."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such config file", reason="FILE_NOT_FOUND") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _bad(path, f"not valid TOML ({exc})") from exc
    known = {
        "id", "role", "listen", "endpoint", "database_url", "key_folder",
        "fetch_registry_from", "trust_refresh_seconds", "log_level", "metrics_port",
        "health_probe", "log_format",
    }  # fmt: skip
    unknown = sorted(set(doc) - known)
    if unknown:
        raise _bad(path, f"unknown keys {unknown}; known: {sorted(known)}")
    role_text = _text(path, doc, "role")
    if role_text not in ROLE_NAMES:
        raise _bad(path, f"role {role_text!r} is not one of {sorted(ROLE_NAMES)}")
    sources = doc.get("fetch_registry_from", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise _bad(path, "'fetch_registry_from' must be a list of host:port strings")
    refresh = doc.get("trust_refresh_seconds", DEFAULT_TRUST_REFRESH_SECONDS)
    if not isinstance(refresh, int | float) or not 0.05 <= refresh <= 3600:
        raise _bad(path, "'trust_refresh_seconds' must be a number between 0.05 and 3600")
    level = _text(path, doc, "log_level", "INFO").upper()
    if level not in LOG_LEVELS:
        raise _bad(path, f"'log_level' must be one of {list(LOG_LEVELS)}")
    log_format = _text(path, doc, "log_format", "text")
    if log_format not in LOG_FORMATS:
        raise _bad(path, f"'log_format' must be one of {list(LOG_FORMATS)}")
    metrics_port = doc.get("metrics_port", 0)
    if not isinstance(metrics_port, int) or not 0 <= metrics_port <= 65535:
        raise _bad(path, "'metrics_port' must be a port number (0 for none)")
    return PartyConfig(
        path=path,
        id=_text(path, doc, "id"),
        role=ROLE_NAMES[role_text],
        listen=_text(path, doc, "listen", ""),
        endpoint=_text(path, doc, "endpoint", ""),
        database_url=_text(path, doc, "database_url", ""),
        key_folder=(path.parent / _text(path, doc, "key_folder", ".")).resolve(),
        fetch_registry_from=tuple(sources),
        trust_refresh_seconds=float(refresh),
        log_level=level,
        log_format=log_format,
        metrics_port=metrics_port,
        health_probe=_text(path, doc, "health_probe", ""),
    )
