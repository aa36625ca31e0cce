"""Load and validate scoring policies from TOML or canonical JSON.

Invariants:
- `parse_policy` is the only way to build a `Policy`; every refusal is a `PolicyError`
  whose message starts with the field path (`purposes.ptt-fuel-discount.participants: ...`).
- Unknown keys are refused in every table, so a typo can never silently drop a rule.
- The policy's `document` is rebuilt from the validated values with every field
  explicit; its canonical JSON (sorted keys, no spaces, UTF-8) is what gets hashed and
  signed. Formatting, key order and spelled-out defaults therefore never change the
  hash; the order of array entries (agencies, indicators) does, because it is content.
- A TOML file may `include` local policy files (paths relative to it, inside its
  folder) that add indicators; the hash covers the fully included document. Included
  files cannot include further files.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fedscore.errors import PolicyError
from policies._fields import Table, json_value, refuse
from policies.model import (
    RELEASE_KINDS,
    Agency,
    Band,
    Indicator,
    Policy,
    Purpose,
    RelyingParty,
)
from policies.statistics import parse_statistics
from policies.vocabulary import DOMAINS, NATIONAL, ScoreRules

PERSON_RANGE = (0, 1_000)
ORGANISATION_RANGE = (0, 5_000)
# Consent for a purpose is renewed at least yearly, like the score window itself.
MAX_TOKEN_DAYS = 366
# A purpose reaches back at most this many years (records older than that are history).
MAX_YEARS_BACK = 10

_ID = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_POLICY_ID = re.compile(r"[a-z0-9][a-z0-9.-]*")
_CODE = re.compile(r"[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*")
# "national", or a DOPA geocode: province (2 digits), district (4) or subdistrict (6).
_SCOPE = re.compile(rf"{NATIONAL}|[0-9]{{2}}(?:[0-9]{{2}}){{0,2}}")

_TOP = frozenset(
    "policy_id title score agencies relying_parties indicators purposes statistics".split()
)


def _keys(model: type) -> frozenset[str]:
    # The document's keys are the model's field names, so the two cannot drift apart.
    return frozenset(field.name for field in fields(model))


_SCORE = _keys(ScoreRules)
_AGENCY = _keys(Agency)
_RELYING_PARTY = _keys(RelyingParty)
_INDICATOR = _keys(Indicator)
_PURPOSE = _keys(Purpose)
_BAND = _keys(Band)
_LOCAL_FILE = frozenset({"indicators"})

POLICY_FILE_SUFFIXES = (".toml", ".json")


def canonical_json(document: Mapping[str, Any]) -> str:
    """The canonical JSON text of a policy document; its UTF-8 bytes are hashed and signed."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def content_hash_of(canonical: bytes) -> str:
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def parse_policy(document: Mapping[str, Any]) -> Policy:
    """Validate a fully included policy document into a `Policy`; raise `PolicyError`."""
    if "include" in document:
        raise refuse("include", "only a TOML file read by load_policy may include files")
    top = Table(document, "", _TOP)
    policy_id = top.text("policy_id", pattern=_POLICY_ID)
    title = top.text("title")
    score = _score(Table(top.raw("score"), "score", _SCORE))
    agencies = _unique(
        (_agency(raw, i) for i, raw in enumerate(top.items("agencies"))), "agencies", "id"
    )
    relying_parties = _unique(
        (_relying_party(raw, i) for i, raw in enumerate(top.items("relying_parties"))),
        "relying_parties",
        "id",
    )
    indicators = _unique(
        (_indicator(raw, i, agencies) for i, raw in enumerate(top.items("indicators"))),
        "indicators",
        "code",
    )
    purposes = _unique(
        (
            _purpose(raw, i, agencies, relying_parties, score)
            for i, raw in enumerate(top.items("purposes"))
        ),
        "purposes",
        "id",
    )
    statistics_rules, statistics = parse_statistics(
        json_value(top.raw("statistics", default={}), "statistics"), score
    )

    normal = {
        "policy_id": policy_id,
        "title": title,
        "score": asdict(score),
        "agencies": [asdict(a) for a in agencies.values()],
        "relying_parties": [asdict(r) for r in relying_parties.values()],
        "indicators": [_without_none(asdict(i)) for i in indicators.values()],
        "purposes": [_without_none(asdict(p)) for p in purposes.values()],
        "statistics": statistics,
    }
    canonical = canonical_json(normal).encode("utf-8")
    return Policy(
        policy_id=policy_id,
        title=title,
        agencies=MappingProxyType(agencies),
        relying_parties=MappingProxyType(relying_parties),
        indicators=MappingProxyType(indicators),
        score=score,
        purposes=MappingProxyType(purposes),
        statistics=MappingProxyType(statistics),
        statistics_rules=statistics_rules,
        canonical=canonical,
        content_hash=content_hash_of(canonical),
    )


def load_policy(path: str | Path) -> Policy:
    """Read a policy from a `.toml` file (with its includes) or a `.json` document."""
    path = Path(path)
    if path.suffix == ".json":
        return parse_policy(document_from_json(_read(path), str(path)))
    if path.suffix == ".toml":
        return parse_policy(_toml_document(path))
    raise PolicyError(f"{path}: a policy file ends in {' or '.join(POLICY_FILE_SUFFIXES)}")


def document_from_json(data: bytes, source: str = "payload") -> dict[str, Any]:
    """Decode a JSON policy document, refusing duplicate keys (JSON would keep the last)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise PolicyError(f"{source}: key {key!r} appears twice in one object")
            out[key] = value
        return out

    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"{source}: not a JSON policy document: {exc}") from exc
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: a policy document is a JSON object")
    return document


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(_read(path).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: not a valid TOML policy file: {exc}") from exc


def _toml_document(path: Path) -> dict[str, Any]:
    document = _read_toml(path)
    includes: tuple[str, ...] = ()
    if "include" in document:
        includes = Table(document, "", _TOP | {"include"}).texts("include")
        del document["include"]
    extra: list[object] = []
    for i, name in enumerate(includes):
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".toml":
            raise refuse(
                f"include[{i}]", f"{name!r} must be a relative .toml path inside {path.parent}"
            )
        local = Table(_read_toml(path.parent / relative), name, _LOCAL_FILE)
        extra.extend(local.items("indicators"))
    if extra:
        own = document.get("indicators", [])
        if not isinstance(own, list):
            raise refuse("indicators", "must be an array")
        document["indicators"] = own + extra
    return document


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    # Optional fields are left out rather than written as null: TOML has no null, and
    # a TOML and a JSON spelling of one policy must hash the same.
    return {k: v for k, v in values.items() if v is not None}


_T = TypeVar("_T")


def _unique(entries: Iterable[_T], path: str, key: str) -> dict[str, _T]:
    out: dict[str, _T] = {}
    for entry in entries:
        name = getattr(entry, key)
        if name in out:
            raise refuse(f"{path}.{name}", f"{key} {name!r} is defined twice")
        out[name] = entry
    return out


def _entry(raw: object, path: str, i: int, allowed: frozenset[str], key: str) -> tuple[Table, str]:
    """An array entry, named by its identifier in messages once that is readable."""
    pattern = _CODE if key == "code" else _ID
    name = raw.get(key) if isinstance(raw, Mapping) else None
    named = isinstance(name, str) and pattern.fullmatch(name) is not None
    table = Table(raw, f"{path}.{name}" if named else f"{path}[{i}]", allowed)
    return table, table.text(key, pattern=pattern)


def _range(table: Table, low_key: str, high_key: str, limits: tuple[int, int]) -> tuple[int, int]:
    low = table.integer(low_key, minimum=limits[0], maximum=limits[1])
    high = table.integer(high_key, minimum=limits[0], maximum=limits[1])
    if high <= low:
        raise refuse(table.at(high_key), f"must be above {low_key} ({low}), got {high}")
    return low, high


def _score(table: Table) -> ScoreRules:
    person = _range(table, "person_min", "person_max", PERSON_RANGE)
    organisation = _range(table, "organisation_min", "organisation_max", ORGANISATION_RANGE)
    timezone = table.text("timezone")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise refuse(table.at("timezone"), f"unknown time zone {timezone!r}") from exc
    return ScoreRules(person[0], person[1], organisation[0], organisation[1], timezone)


def _agency(raw: object, i: int) -> Agency:
    table, agency_id = _entry(raw, "agencies", i, _AGENCY, "id")
    return Agency(
        id=agency_id,
        name=table.text("name"),
        name_th=table.text("name_th"),
        scope=table.text("scope", pattern=_SCOPE),
        example=table.flag("example", default=False),
    )


def _relying_party(raw: object, i: int) -> RelyingParty:
    table, party_id = _entry(raw, "relying_parties", i, _RELYING_PARTY, "id")
    return RelyingParty(party_id, table.text("name"), table.text("name_th"))


def _indicator(raw: object, i: int, agencies: Mapping[str, Agency]) -> Indicator:
    table, code = _entry(raw, "indicators", i, _INDICATOR, "code")
    domain = table.text("domain")
    if domain not in DOMAINS:
        raise refuse(table.at("domain"), f"unknown domain {domain!r}; one of {', '.join(DOMAINS)}")
    agency_id = table.text("agency")
    if agency_id not in agencies:
        raise refuse(table.at("agency"), f"unknown agency {agency_id!r}")
    agency = agencies[agency_id]
    points = table.integer("points", minimum=0, maximum=PERSON_RANGE[1])
    cap = table.optional_integer("cap_per_year", minimum=0)
    if cap is not None and cap < points:
        raise refuse(table.at("cap_per_year"), f"cap {cap} is below one occurrence ({points})")
    scope = table.text("scope", pattern=_SCOPE, default=agency.scope)
    # A local agency scores only inside its own area.
    if agency.scope != NATIONAL and not (scope != NATIONAL and scope.startswith(agency.scope)):
        raise refuse(
            table.at("scope"), f"{scope!r} is outside agency {agency_id}'s {agency.scope!r}"
        )
    return Indicator(
        code=code,
        domain=domain,
        points=points,
        cap_per_year=cap,
        agency=agency_id,
        requires_certification=table.flag("requires_certification"),
        scope=scope,
        example=table.flag("example", default=False),
        title=table.text("title"),
        title_th=table.text("title_th"),
    )


def _purpose(
    raw: object,
    i: int,
    agencies: Mapping[str, Agency],
    relying_parties: Mapping[str, RelyingParty],
    score: ScoreRules,
) -> Purpose:
    table, purpose_id = _entry(raw, "purposes", i, _PURPOSE, "id")
    gates = table.at("basic_right_or_public_service")
    if not table.has("basic_right_or_public_service"):
        raise refuse(gates, "required: declare that the purpose gates no basic right")
    if table.flag("basic_right_or_public_service"):
        raise refuse(gates, "a score may never gate a basic right or public service")

    parties = table.texts("relying_parties", pattern=_ID)
    if not parties:
        raise refuse(table.at("relying_parties"), "name at least one relying party")
    for party in parties:
        if party not in relying_parties:
            raise refuse(table.at("relying_parties"), f"unknown relying party {party!r}")
    participants = table.texts("participants", pattern=_ID)
    # With one participant the total would be that agency's contribution in the clear.
    if len(participants) < 2:
        raise refuse(table.at("participants"), "needs at least two contributing agencies")
    for agency in participants:
        if agency not in agencies:
            raise refuse(table.at("participants"), f"unknown agency {agency!r}")
    domains = table.texts("domains", pattern=_ID)
    if not domains:
        raise refuse(table.at("domains"), "name at least one domain")
    for domain in domains:
        if domain not in DOMAINS:
            raise refuse(table.at("domains"), f"unknown domain {domain!r}")

    release_text = table.text("release")
    release = next((kind for kind in RELEASE_KINDS if kind == release_text), None)
    if release is None:
        raise refuse(table.at("release"), f"{release_text!r} is not one of {RELEASE_KINDS}")
    bands = _bands(table, score) if release == "band" else ()
    if release != "band" and table.items("bands", default=[]):
        raise refuse(table.at("bands"), 'only a purpose with release = "band" has bands')
    eligible_min = None
    if release == "eligible":
        eligible_min = table.integer(
            "eligible_min", minimum=score.person_min, maximum=score.person_max
        )
    elif table.has("eligible_min"):
        raise refuse(table.at("eligible_min"), 'only a purpose with release = "eligible" has it')
    return Purpose(
        id=purpose_id,
        description=table.text("description"),
        relying_parties=parties,
        participants=participants,
        domains=domains,
        release=release,
        bands=bands,
        eligible_min=eligible_min,
        max_token_days=table.integer("max_token_days", minimum=1, maximum=MAX_TOKEN_DAYS),
        max_uses=table.integer("max_uses", minimum=0),
        basic_right_or_public_service=False,
        max_years_back=table.integer(
            "max_years_back", minimum=0, maximum=MAX_YEARS_BACK, default=0
        ),
    )


def _bands(purpose: Table, score: ScoreRules) -> tuple[Band, ...]:
    raws = purpose.items("bands")
    if not raws:
        raise refuse(purpose.at("bands"), 'a purpose with release = "band" needs bands')
    bands: list[Band] = []
    for i, raw in enumerate(raws):
        table = Table(raw, f"{purpose.at('bands')}[{i}]", _BAND)
        low = bands[-1].min_points + 1 if bands else score.person_min
        band = Band(
            table.integer("min_points", minimum=low, maximum=score.person_max), table.text("label")
        )
        if i == 0 and band.min_points != score.person_min:
            # Every total must fall in some band, so the first starts at the bottom.
            raise refuse(table.at("min_points"), f"the first band starts at {score.person_min}")
        if any(b.label == band.label for b in bands):
            raise refuse(table.at("label"), f"label {band.label!r} is used twice")
        bands.append(band)
    return tuple(bands)
