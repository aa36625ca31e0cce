"""Loading, canonical hashing and refusals of scoring policies."""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedscore.errors import PolicyError
from policies.defaults import default_policy_path
from policies.loader import canonical_json, load_policy, parse_policy

DEFAULTS = default_policy_path().parent
DEFAULT = load_policy(default_policy_path())


def base() -> dict[str, Any]:
    return DEFAULT.document


def by_code(document: dict[str, Any], code: str) -> dict[str, Any]:
    return next(i for i in document["indicators"] if i["code"] == code)


def by_id(document: dict[str, Any], table: str, entry_id: str) -> dict[str, Any]:
    return next(e for e in document[table] if e["id"] == entry_id)


def ptt(document: dict[str, Any]) -> dict[str, Any]:
    return by_id(document, "purposes", "ptt-fuel-discount")


def self_view(document: dict[str, Any]) -> dict[str, Any]:
    return by_id(document, "purposes", "self-view")


Mutation = Callable[[dict[str, Any]], object]

# Each row: what is wrong, how to make it wrong, the field the refusal must name,
# and a word of the explanation.
REFUSALS: list[tuple[str, Mutation, str, str]] = [
    ("unknown top-level key", lambda d: d.update(statistcs={}), "statistcs", "unknown key"),
    ("missing title", lambda d: d.pop("title"), "title", "required"),
    ("include in a parsed document", lambda d: d.update(include=["x.toml"]), "include", "TOML"),
    (
        "unknown score key",
        lambda d: d["score"].update(person_maximum=1),
        "score.person_maximum",
        "unknown",
    ),
    (
        "person max above 1000",
        lambda d: d["score"].update(person_max=1001),
        "score.person_max",
        "1000",
    ),
    ("person min below 0", lambda d: d["score"].update(person_min=-1), "score.person_min", ">= 0"),
    ("empty person range", lambda d: d["score"].update(person_max=0), "score.person_max", "above"),
    (
        "organisation max above 5000",
        lambda d: d["score"].update(organisation_max=5001),
        "score.organisation_max",
        "5000",
    ),
    (
        "unknown time zone",
        lambda d: d["score"].update(timezone="Asia/Bangkokk"),
        "score.timezone",
        "time zone",
    ),
    (
        "duplicate agency",
        lambda d: d["agencies"].append(dict(d["agencies"][0])),
        "agencies.trc",
        "twice",
    ),
    (
        "agency scope not a geocode",
        lambda d: by_id(d, "agencies", "trc").update(scope="bangkok"),
        "agencies.trc.scope",
        "match",
    ),
    (
        "agency id with capitals",
        lambda d: by_id(d, "agencies", "trc").update(id="TRC"),
        "agencies[0].id",
        "match",
    ),
    (
        "unknown domain",
        lambda d: by_code(d, "TRC-BLOOD").update(domain="wealth"),
        "indicators.TRC-BLOOD.domain",
        "unknown domain",
    ),
    (
        "negative points",
        lambda d: by_code(d, "TRC-BLOOD").update(points=-70),
        "indicators.TRC-BLOOD.points",
        ">= 0",
    ),
    (
        "points as a boolean",
        lambda d: by_code(d, "TRC-BLOOD").update(points=True),
        "indicators.TRC-BLOOD.points",
        "integer",
    ),
    (
        "points as text",
        lambda d: by_code(d, "TRC-BLOOD").update(points="70"),
        "indicators.TRC-BLOOD.points",
        "integer",
    ),
    (
        "cap below one occurrence",
        lambda d: by_code(d, "TRC-ORGAN-PLEDGE").update(cap_per_year=100),
        "indicators.TRC-ORGAN-PLEDGE.cap_per_year",
        "below",
    ),
    (
        "duplicate indicator code",
        lambda d: d["indicators"].append(dict(d["indicators"][0])),
        "indicators.TRC-BLOOD",
        "twice",
    ),
    (
        "indicator typo key",
        lambda d: by_code(d, "TRC-BLOOD").update(pionts=70),
        "indicators.TRC-BLOOD.pionts",
        "unknown key",
    ),
    (
        "indicator of unknown agency",
        lambda d: by_code(d, "TRC-BLOOD").update(agency="nso"),
        "indicators.TRC-BLOOD.agency",
        "unknown agency",
    ),
    (
        "indicator code in lower case",
        lambda d: by_code(d, "TRC-BLOOD").update(code="trc-blood"),
        "indicators[0].code",
        "match",
    ),
    (
        "missing certification flag",
        lambda d: by_code(d, "TRC-BLOOD").pop("requires_certification"),
        "indicators.TRC-BLOOD.requires_certification",
        "required",
    ),
    (
        "local indicator made national",
        lambda d: by_code(d, "CP-BLOOD").update(scope="national"),
        "indicators.CP-BLOOD.scope",
        "outside",
    ),
    (
        "local indicator in another area",
        lambda d: by_code(d, "CP-BLOOD").update(scope="10"),
        "indicators.CP-BLOOD.scope",
        "outside",
    ),
    (
        "purpose gates a basic right",
        lambda d: ptt(d).update(basic_right_or_public_service=True),
        "purposes.ptt-fuel-discount.basic_right_or_public_service",
        "basic right",
    ),
    (
        "purpose silent on basic rights",
        lambda d: ptt(d).pop("basic_right_or_public_service"),
        "purposes.ptt-fuel-discount.basic_right_or_public_service",
        "required",
    ),
    (
        "basic-right flag as text",
        lambda d: ptt(d).update(basic_right_or_public_service="false"),
        "purposes.ptt-fuel-discount.basic_right_or_public_service",
        "true or false",
    ),
    (
        "empty participant set",
        lambda d: ptt(d).update(participants=[]),
        "purposes.ptt-fuel-discount.participants",
        "at least two",
    ),
    (
        "single participant",
        lambda d: ptt(d).update(participants=["trc"]),
        "purposes.ptt-fuel-discount.participants",
        "at least two",
    ),
    (
        "unknown participant",
        lambda d: ptt(d)["participants"].append("nso"),
        "purposes.ptt-fuel-discount.participants",
        "unknown agency",
    ),
    (
        "participant listed twice",
        lambda d: ptt(d)["participants"].append("trc"),
        "purposes.ptt-fuel-discount.participants[10]",
        "twice",
    ),
    (
        "unknown relying party",
        lambda d: ptt(d).update(relying_parties=["shell"]),
        "purposes.ptt-fuel-discount.relying_parties",
        "unknown relying party",
    ),
    (
        "relying party is an agency",
        lambda d: ptt(d).update(relying_parties=["trc"]),
        "purposes.ptt-fuel-discount.relying_parties",
        "unknown relying party",
    ),
    (
        "no relying party",
        lambda d: ptt(d).update(relying_parties=[]),
        "purposes.ptt-fuel-discount.relying_parties",
        "at least one",
    ),
    (
        "unknown purpose domain",
        lambda d: ptt(d)["domains"].append("wealth"),
        "purposes.ptt-fuel-discount.domains",
        "unknown domain",
    ),
    (
        "no purpose domain",
        lambda d: ptt(d).update(domains=[]),
        "purposes.ptt-fuel-discount.domains",
        "at least one",
    ),
    (
        "unknown release",
        lambda d: ptt(d).update(release="total"),
        "purposes.ptt-fuel-discount.release",
        "not one of",
    ),
    (
        "first band above zero",
        lambda d: ptt(d)["bands"].pop(0),
        "purposes.ptt-fuel-discount.bands[0].min_points",
        "first band",
    ),
    (
        "bands out of order",
        lambda d: ptt(d)["bands"].append(ptt(d)["bands"].pop(1)),
        "purposes.ptt-fuel-discount.bands[2].min_points",
        ">= 301",
    ),
    (
        "band label twice",
        lambda d: ptt(d)["bands"][2].update(label="3%"),
        "purposes.ptt-fuel-discount.bands[2].label",
        "twice",
    ),
    (
        "band beyond the range",
        lambda d: ptt(d)["bands"][2].update(min_points=1001),
        "purposes.ptt-fuel-discount.bands[2].min_points",
        "<= 1000",
    ),
    (
        "band release without bands",
        lambda d: ptt(d).update(bands=[]),
        "purposes.ptt-fuel-discount.bands",
        "needs bands",
    ),
    (
        "bands on a score release",
        lambda d: self_view(d).update(bands=[{"min_points": 0, "label": "x"}]),
        "purposes.self-view.bands",
        "only",
    ),
    (
        "eligible without a minimum",
        lambda d: self_view(d).update(release="eligible"),
        "purposes.self-view.eligible_min",
        "required",
    ),
    (
        "minimum on a score release",
        lambda d: self_view(d).update(eligible_min=100),
        "purposes.self-view.eligible_min",
        "only",
    ),
    (
        "token lifetime zero",
        lambda d: ptt(d).update(max_token_days=0),
        "purposes.ptt-fuel-discount.max_token_days",
        ">= 1",
    ),
    (
        "negative use limit",
        lambda d: ptt(d).update(max_uses=-1),
        "purposes.ptt-fuel-discount.max_uses",
        ">= 0",
    ),
    (
        "purpose typo key",
        lambda d: ptt(d).update(relying_party=["ptt"]),
        "purposes.ptt-fuel-discount.relying_party",
        "unknown key",
    ),
    (
        "duplicate purpose",
        lambda d: d["purposes"].append(copy.deepcopy(d["purposes"][0])),
        "purposes.ptt-fuel-discount",
        "twice",
    ),
    ("statistics not a table", lambda d: d.update(statistics=[1]), "statistics", "table"),
    (
        "statistics not finite",
        lambda d: d["statistics"].update(budget_epsilon_per_year=float("inf")),
        "statistics.budget_epsilon_per_year",
        "finite",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field", "word"),
    [pytest.param(m, f, w, id=name) for name, m, f, w in REFUSALS],
)
def test_parse_policy_refuses_naming_the_field(mutate: Mutation, field: str, word: str) -> None:
    document = base()
    mutate(document)
    with pytest.raises(PolicyError) as refused:
        parse_policy(document)
    assert refused.value.reason == "INVALID_POLICY"
    assert refused.value.message.startswith(f"{field}: "), refused.value.message
    assert word in refused.value.message


def test_the_unchanged_document_parses() -> None:
    # The refusal table is meaningful only if the base it mutates is itself accepted.
    assert parse_policy(base()).content_hash == DEFAULT.content_hash


def test_default_policy_loads_with_its_local_include() -> None:
    assert DEFAULT.policy_id == "th-default"
    assert DEFAULT.content_hash.startswith("sha256:")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", DEFAULT.content_hash)
    assert {i.code for i in DEFAULT.indicators.values() if i.agency == "chuangpao"} >= {
        "CP-ACCOUNT",
        "CP-CONSERVATION",
    }
    assert set(DEFAULT.purposes) == {"ptt-fuel-discount", "self-view"}
    assert DEFAULT.statistics["budget_epsilon_per_year"] == 10.0


def test_json_round_trip_keeps_the_hash(tmp_path: Path) -> None:
    written = tmp_path / "policy.json"
    written.write_text(canonical_json(DEFAULT.document), "utf-8")
    again = load_policy(written)
    assert again.content_hash == DEFAULT.content_hash
    assert again == DEFAULT


def test_canonical_json_is_compact_sorted_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["ก", 2.5]}) == '{"a":["ก",2.5],"b":1}'


def _reformatted(text: str) -> str:
    """The same TOML with comments and blank lines gone, spacing changed, and the keys
    of every simple [[agencies]]/[[indicators]]/[[relying_parties]] block reversed."""
    out: list[str] = []
    block: list[str] = []
    reversible = False

    def flush() -> None:
        out.extend(reversed(block) if reversible else block)
        block.clear()

    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("["):
            flush()
            out.append(line)
            reversible = line.startswith(("[[agencies]]", "[[indicators]]", "[[relying_parties]]"))
            continue
        if " = " in line and not line.startswith(" "):
            key, value = line.split(" = ", 1)
            line = f"{key}   =\t{value}"
        block.append(line)
    flush()
    return "\n".join(out) + "\n\n\n"


def test_hash_ignores_toml_formatting_and_key_order(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    national = (DEFAULTS / "national.toml").read_text("utf-8")
    local = (DEFAULTS / "local" / "chuang-pao.toml").read_text("utf-8")
    (tmp_path / "national.toml").write_text(_reformatted(national), "utf-8")
    (tmp_path / "local" / "chuang-pao.toml").write_text(_reformatted(local), "utf-8")
    assert load_policy(tmp_path / "national.toml").content_hash == DEFAULT.content_hash


def test_hash_covers_included_files_as_if_written_inline(tmp_path: Path) -> None:
    national = (DEFAULTS / "national.toml").read_text("utf-8")
    local = (DEFAULTS / "local" / "chuang-pao.toml").read_text("utf-8")
    inline = national.replace('include = ["local/chuang-pao.toml"]', "")
    # Arrays of tables may be continued anywhere; the local indicators come last.
    (tmp_path / "inline.toml").write_text(inline + "\n" + local, "utf-8")
    assert load_policy(tmp_path / "inline.toml").content_hash == DEFAULT.content_hash


def test_spelled_out_defaults_do_not_change_the_hash() -> None:
    document = base()
    blood = by_code(document, "TRC-BLOOD")
    blood.pop("example")
    blood.pop("scope")  # defaults to the agency's scope
    by_id(document, "agencies", "trc").pop("example")
    assert parse_policy(document).content_hash == DEFAULT.content_hash


def test_any_change_of_content_changes_the_hash() -> None:
    document = base()
    by_code(document, "TRC-BLOOD")["points"] = 71
    assert parse_policy(document).content_hash != DEFAULT.content_hash
    document = base()
    document["indicators"].reverse()  # array order is content
    assert parse_policy(document).content_hash != DEFAULT.content_hash


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_hash_ignores_key_order(rng: random.Random) -> None:
    assert parse_policy(_shuffled(base(), rng)).content_hash == DEFAULT.content_hash


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def _national_with_include(tmp_path: Path, include: str) -> Path:
    national = (DEFAULTS / "national.toml").read_text("utf-8")
    return write(
        tmp_path / "national.toml",
        national.replace('include = ["local/chuang-pao.toml"]', f"include = [{include}]"),
    )


@pytest.mark.parametrize(
    ("include", "local", "field"),
    [
        ('"../outside.toml"', None, "include[0]"),
        ('"/etc/passwd.toml"', None, "include[0]"),
        ('"local/x.yaml"', None, "include[0]"),
        ('"local/x.toml", "local/x.toml"', "indicators = []", "include[1]"),
        ('"local/x.toml"', 'title = "Chuang Pao"\n', "local/x.toml.title"),
        ('"local/x.toml"', 'include = ["y.toml"]\n', "local/x.toml.include"),
        ('"local/x.toml"', 'indicators = "none"\n', "local/x.toml.indicators"),
    ],
)
def test_load_policy_refuses_bad_includes(
    tmp_path: Path, include: str, local: str | None, field: str
) -> None:
    if local is not None:
        write(tmp_path / "local" / "x.toml", local)
    with pytest.raises(PolicyError) as refused:
        load_policy(_national_with_include(tmp_path, include))
    assert refused.value.message.startswith(f"{field}: "), refused.value.message


def test_load_policy_refuses_a_missing_include(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(_national_with_include(tmp_path, '"local/missing.toml"'))


def test_included_indicators_are_validated_too(tmp_path: Path) -> None:
    local = (DEFAULTS / "local" / "chuang-pao.toml").read_text("utf-8")
    write(tmp_path / "local" / "chuang-pao.toml", local.replace("points = 50", "points = -50", 1))
    with pytest.raises(PolicyError) as refused:
        load_policy(_national_with_include(tmp_path, '"local/chuang-pao.toml"'))
    assert refused.value.message.startswith("indicators.CP-ACCOUNT.points: ")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("policy.toml", b"title = \n", "not a valid TOML"),
        ("policy.toml", b"\xff\xfe", "not a valid TOML"),
        ("policy.json", b"{not json", "not a JSON policy"),
        ("policy.json", b"[1, 2]", "JSON object"),
        ("policy.json", b'{"title": "a", "title": "b"}', "appears twice"),
        ("policy.yaml", b"title: x", "ends in .toml or .json"),
    ],
)
def test_load_policy_refuses_unreadable_files(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=match):
        load_policy(path)


def test_load_policy_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")


def test_toml_datetimes_cannot_enter_statistics(tmp_path: Path) -> None:
    national = (DEFAULTS / "national.toml").read_text("utf-8")
    write(tmp_path / "local" / "chuang-pao.toml", "indicators = []\n")
    # The file ends in [statistics], so this key lands there.
    path = write(tmp_path / "n.toml", national + "since = 2024-01-01\n")
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert refused.value.message.startswith("statistics.since: ")


def test_policy_is_immutable() -> None:
    with pytest.raises(TypeError):
        DEFAULT.indicators["X"] = DEFAULT.indicators["TRC-BLOOD"]  # type: ignore[index]
    document = DEFAULT.document
    document["indicators"].clear()
    assert DEFAULT.document["indicators"]
    assert json.loads(DEFAULT.canonical) == DEFAULT.document
