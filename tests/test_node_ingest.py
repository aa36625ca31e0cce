"""Importing agency exports into a real SQLite node store: counts, idempotence, every kind
of bad row (reported by row number, nothing stored), and no raw ID on disk."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text

from fedscore.errors import IngestError
from keys.national_id import with_check_digit
from keys.pseudonym import pseudonym
from node.export_rows import COLUMNS
from node.ingest import IngestReport, ingest_file
from node.store import BEHAVIOUR_RECORD, IMPORT_BATCH, QUERY_INDEX_NAME, NodeStore
from policies.defaults import default_policy_document
from policies.loader import parse_policy
from policies.model import Policy

BANGKOK = ZoneInfo("Asia/Bangkok")
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=BANGKOK).timestamp()
KEY = b"agency pseudonym key, 32 bytes!!"
AGENCY = "trc"
ID_A = with_check_digit("110170023070")
ID_B = with_check_digit("310060012345")
ID_C = with_check_digit("512340000001")
ALL_IDS = (ID_A, ID_B, ID_C)
BAD_CHECK_DIGIT = ID_A[:-1] + str((int(ID_A[-1]) + 1) % 10)
HEADER = ",".join(COLUMNS)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(default_policy_document(3))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    store = NodeStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    store.dispose()


def _csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _jsonl(path: Path, *records: dict[str, object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _ingest(store: NodeStore, path: Path, policy: Policy) -> IngestReport:
    return ingest_file(store, path, policy, AGENCY, KEY, now=NOW)


def _year(policy: Policy, year: int) -> tuple[int, int]:
    start, end = policy.year_bounds(year)
    return int(start.timestamp()), int(end.timestamp())


def _batches(store: NodeStore) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(IMPORT_BATCH)).scalar_one())


GOOD_ROWS = (
    f"{ID_A},TRC-BLOOD,2024-03-01,1,TRC-HQ",
    f"{ID_A},TRC-BLOOD,2024-07-15T09:30:00,2,TRC-HQ",
    f"{ID_A},TRC-ORGAN-PLEDGE,2024-12-31T23:59:59,1,TRC-HQ",
    f"{ID_B},TRC-PLASMA,2025-01-02,1,",
    f"{ID_C},TRC-STEM-CELL,2023-12-31T20:00:00+00:00,1,TRC Chiang Mai",
)


def test_good_csv_is_imported_with_counts(store: NodeStore, policy: Policy, tmp_path: Path) -> None:
    report = _ingest(store, _csv(tmp_path / "export.csv", *GOOD_ROWS), policy)
    assert report.rows == 5
    assert report.new_records == 5
    assert report.duplicate_records == 0
    assert not report.already_imported
    assert len(report.file_sha256) == 64
    assert store.record_count() == 5
    assert store.pseudonym_count() == 3
    assert _batches(store) == 1


def test_good_jsonl_is_imported_with_counts(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    records: list[dict[str, object]] = [
        {"national_id": ID_A, "indicator": "TRC-BLOOD", "occurred_at": "2024-03-01",
         "quantity": 1, "certifier": "TRC-HQ"},
        {"national_id": ID_B, "indicator": "TRC-PLASMA", "occurred_at": "2024-05-01T08:00:00",
         "quantity": "2", "certifier": None},
        {"national_id": ID_A, "indicator": "TRC-BODY-PLEDGE", "occurred_at": "2024-06-01",
         "quantity": 1, "certifier": ""},
    ]  # fmt: skip
    report = _ingest(store, _jsonl(tmp_path / "export.jsonl", *records), policy)
    assert (report.rows, report.new_records, report.duplicate_records) == (3, 3, 0)
    assert store.record_count() == 3
    assert store.pseudonym_count() == 2
    start, end = _year(policy, 2024)
    subject = pseudonym(KEY, ID_A)
    assert store.quantities(subject, start, end) == {"TRC-BLOOD": 1}  # the pledge is uncertified


def test_spreadsheet_csv_with_bom_crlf_and_other_column_order(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    path = tmp_path / "export.csv"
    lines = [
        "certifier,quantity,occurred_at,indicator,national_id",
        f'"TRC, Bangkok",2,2024-03-01,TRC-BLOOD,{ID_A}',
        f"TRC-HQ,1,2024-03-02,TRC-PLASMA,{ID_B}",
    ]
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    report = _ingest(store, path, policy)
    assert (report.rows, report.new_records) == (2, 2)
    subject = pseudonym(KEY, ID_A)
    assert store.quantities(subject, *_year(policy, 2024)) == {"TRC-BLOOD": 2}


def test_quantities_respect_year_window_local_time_and_certification(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    _ingest(store, _csv(tmp_path / "export.csv", *GOOD_ROWS), policy)
    a, b, c = (pseudonym(KEY, i) for i in ALL_IDS)
    assert store.quantities(a, *_year(policy, 2024)) == {"TRC-BLOOD": 3, "TRC-ORGAN-PLEDGE": 1}
    assert store.quantities(a, *_year(policy, 2023)) == {}
    assert store.quantities(b, *_year(policy, 2025)) == {}  # no certifier: not certified
    assert store.quantities(b, *_year(policy, 2025), uncertified_ok={"TRC-PLASMA"}) == {
        "TRC-PLASMA": 1
    }
    # 20:00 UTC on 31 December 2023 is 03:00 on 1 January 2024 in Bangkok.
    assert store.quantities(c, *_year(policy, 2024)) == {"TRC-STEM-CELL": 1}
    assert store.quantities(c, *_year(policy, 2023)) == {}


def test_naive_times_are_bangkok_time(store: NodeStore, policy: Policy, tmp_path: Path) -> None:
    # 00:30 on 1 January 2024 in Bangkok is still 2023 in UTC; it belongs to 2024.
    _ingest(store, _csv(tmp_path / "e.csv", f"{ID_A},TRC-BLOOD,2024-01-01T00:30:00,1,HQ"), policy)
    subject = pseudonym(KEY, ID_A)
    assert store.quantities(subject, *_year(policy, 2024)) == {"TRC-BLOOD": 1}
    assert store.quantities(subject, *_year(policy, 2023)) == {}


def test_reimporting_the_same_file_changes_nothing(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    path = _csv(tmp_path / "export.csv", *GOOD_ROWS)
    first = _ingest(store, path, policy)
    again = _ingest(store, path, policy)
    assert again.already_imported
    assert again.file_sha256 == first.file_sha256
    assert (again.rows, again.new_records, again.duplicate_records) == (5, 0, 0)
    copy = tmp_path / "renamed.csv"
    copy.write_bytes(path.read_bytes())
    assert _ingest(store, copy, policy).already_imported
    assert store.record_count() == 5
    assert _batches(store) == 1


def test_records_already_stored_or_repeated_are_duplicates(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    _ingest(store, _csv(tmp_path / "first.csv", *GOOD_ROWS[:3]), policy)
    second = _csv(
        tmp_path / "second.csv",
        *GOOD_ROWS,  # three of these are stored already
        GOOD_ROWS[4],  # repeated inside the file
        f"{ID_A} ,TRC-BLOOD, 2024-03-01 , 1 , TRC-HQ ",  # the same record, with spaces
    )
    report = _ingest(store, second, policy)
    assert (report.rows, report.new_records, report.duplicate_records) == (7, 2, 5)
    assert store.record_count() == 5
    assert _batches(store) == 2


def test_a_large_file_spanning_several_chunks(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    people = [with_check_digit(f"1{n:011d}") for n in range(500)]
    rows = [
        f"{people[n % 500]},TRC-BLOOD,2024-{1 + n % 12:02d}-{1 + n % 28:02d}T10:{n % 60:02d}:00,"
        f"{1 + n // 500 % 3},HQ{n // 1500}"
        for n in range(25_000)
    ]
    report = _ingest(store, _csv(tmp_path / "big.csv", *rows, *rows[:100]), policy)
    assert (report.rows, report.new_records, report.duplicate_records) == (25_100, 25_000, 100)
    assert store.record_count() == 25_000
    assert store.pseudonym_count() == 500


def _problems(store: NodeStore, policy: Policy, path: Path) -> list[tuple[int, str]]:
    with pytest.raises(IngestError) as err:
        _ingest(store, path, policy)
    assert err.value.reason == "INVALID_IMPORT"
    assert store.record_count() == 0
    assert _batches(store) == 0
    return err.value.problems


BAD_ROWS = [
    ("bad check digit", f"{BAD_CHECK_DIGIT},TRC-BLOOD,2024-03-01,1,HQ", "check digit"),
    ("twelve digits", f"{ID_A[:-1]},TRC-BLOOD,2024-03-01,1,HQ", "13 digits"),
    ("letters in the ID", "11017002307x1,TRC-BLOOD,2024-03-01,1,HQ", "only digits"),
    ("unknown indicator", f"{ID_A},TRC-HAIR,2024-03-01,1,HQ", "'TRC-HAIR' is not in the policy"),
    (
        "indicator of another agency",
        f"{ID_A},NAT-SKILL-TRAINING,2024-03-01,1,HQ",
        "recorded by agency 'dsd'",
    ),
    ("future date", f"{ID_A},TRC-BLOOD,2025-06-02,1,HQ", "in the future"),
    ("later today", f"{ID_A},TRC-BLOOD,2025-06-01T12:00:01,1,HQ", "in the future"),
    ("impossible date", f"{ID_A},TRC-BLOOD,2024-13-01,1,HQ", "ISO date"),
    ("not a date", f"{ID_A},TRC-BLOOD,yesterday,1,HQ", "ISO date"),
    ("before 2000", f"{ID_A},TRC-BLOOD,1999-12-31T23:59:59,1,HQ", "before 2000"),
    ("zero quantity", f"{ID_A},TRC-BLOOD,2024-03-01,0,HQ", "quantity"),
    ("too many", f"{ID_A},TRC-BLOOD,2024-03-01,1001,HQ", "quantity"),
    ("fraction", f"{ID_A},TRC-BLOOD,2024-03-01,1.5,HQ", "quantity"),
    ("negative", f"{ID_A},TRC-BLOOD,2024-03-01,-1,HQ", "quantity"),
    ("missing field", f"{ID_A},TRC-BLOOD,2024-03-01,1", "expected 5 fields, found 4"),
    ("certifier is an ID", f"{ID_A},TRC-BLOOD,2024-03-01,1,{ID_B}", "13-digit"),
]


@pytest.mark.parametrize(("bad", "row", "reason"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_each_bad_row_rejects_the_whole_csv(
    store: NodeStore, policy: Policy, tmp_path: Path, bad: str, row: str, reason: str
) -> None:
    path = _csv(tmp_path / "export.csv", GOOD_ROWS[0], GOOD_ROWS[1], row, GOOD_ROWS[3])
    problems = _problems(store, policy, path)
    assert [n for n, _ in problems] == [4], bad  # header is row 1, the bad row is row 4
    assert reason in problems[0][1]


def test_every_problem_is_reported_with_its_row_number(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    path = _csv(
        tmp_path / "export.csv",
        GOOD_ROWS[0],
        BAD_ROWS[0][1],
        GOOD_ROWS[1],
        BAD_ROWS[4][1],
        BAD_ROWS[5][1],
        GOOD_ROWS[2],
        BAD_ROWS[10][1],
    )
    problems = _problems(store, policy, path)
    assert [n for n, _ in problems] == [3, 5, 6, 8]


def test_a_missing_column_rejects_the_file_at_the_header(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    path = _csv(
        tmp_path / "export.csv",
        f"{ID_A},TRC-BLOOD,2024-03-01,HQ",
        header="national_id,indicator,occurred_at,certifier",
    )
    assert _problems(store, policy, path) == [(1, "missing column quantity")]


def test_an_empty_file_has_no_header(store: NodeStore, policy: Policy, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(b"")
    problems = _problems(store, policy, path)
    assert [n for n, _ in problems] == [1]


def test_jsonl_problems_use_line_numbers(store: NodeStore, policy: Policy, tmp_path: Path) -> None:
    good = {
        "national_id": ID_A,
        "indicator": "TRC-BLOOD",
        "occurred_at": "2024-03-01",
        "quantity": 1,
        "certifier": "HQ",
    }
    path = tmp_path / "export.jsonl"
    lines = [
        json.dumps(good),
        json.dumps({**good, "national_id": int(ID_B)}),  # a number, not text
        "{not json",
        "",
        json.dumps({k: v for k, v in good.items() if k != "quantity"}),
        json.dumps({**good, "quantity": True}),
        json.dumps({**good, "occurred_at": 1709251200}),
        json.dumps([1, 2, 3]),
        json.dumps({**good, "indicator": "CP-BLOOD"}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = _problems(store, policy, path)
    assert [n for n, _ in problems] == [2, 3, 5, 6, 7, 8, 9]
    assert "missing column quantity" in problems[2][1]
    assert "recorded by agency 'chuangpao'" in problems[6][1]


def test_an_unknown_file_type_is_refused(store: NodeStore, policy: Policy, tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(IngestError):
        _ingest(store, path, policy)
    assert store.record_count() == 0


def test_problem_texts_never_repeat_an_id(store: NodeStore, policy: Policy, tmp_path: Path) -> None:
    rows = [
        f"{BAD_CHECK_DIGIT},TRC-BLOOD,2024-03-01,1,HQ",
        f"{ID_A},{ID_B},2024-03-01,1,HQ",  # an ID in the indicator column
        f"{ID_A},TRC-BLOOD,{ID_B},1,HQ",
        f"{ID_A},TRC-BLOOD,2024-03-01,{ID_B},HQ",
        f"{ID_A},TRC-BLOOD,2024-03-01,1,{ID_C}",
    ]
    path = _csv(tmp_path / "export.csv", *rows, header="national_id,indicator,occurred_at,"
                "quantity,certifier")  # fmt: skip
    with pytest.raises(IngestError) as err:
        _ingest(store, path, policy)
    texts = str(err.value) + repr(err.value.problems)
    assert len(err.value.problems) == 5
    for national_id in (*ALL_IDS, BAD_CHECK_DIGIT):
        assert national_id not in texts


def test_the_database_files_hold_no_raw_id(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    _ingest(store, _csv(tmp_path / "export.csv", *GOOD_ROWS), policy)
    jsonl = [
        {"national_id": i, "indicator": "TRC-PLATELET", "occurred_at": "2024-08-08",
         "quantity": 1, "certifier": "HQ"}
        for i in ALL_IDS
    ]  # fmt: skip
    _ingest(store, _jsonl(tmp_path / "export.jsonl", *jsonl), policy)
    assert store.record_count() == 8

    def files() -> list[Path]:
        return list(tmp_path.glob("state.db*"))

    def raw_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in files())

    # While connections are open the records may sit in the WAL file; after closing,
    # they are checkpointed into the main file. Neither may hold an ID.
    assert any(p.name.endswith("-wal") for p in files())
    for stage in ("open", "closed"):
        data = raw_bytes()
        # Pseudonyms are stored as their 32 raw bytes; the check can see records.
        assert bytes.fromhex(pseudonym(KEY, ID_A)) in data, stage
        for national_id in ALL_IDS:
            assert national_id.encode() not in data, stage
            assert national_id.encode("utf-16-le") not in data, stage
        store.dispose()


def test_concurrent_imports_of_overlapping_files(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    people = [with_check_digit(f"2{n:011d}") for n in range(200)]
    rows = [f"{people[n % 200]},TRC-BLOOD,2024-01-{1 + n % 28:02d},1,HQ" for n in range(3000)]
    paths = [
        _csv(tmp_path / "a.csv", *rows[:2000]),
        _csv(tmp_path / "b.csv", *rows[1000:]),
        _csv(tmp_path / "c.csv", *rows[500:2500]),
    ]
    reports: list[IngestReport] = []
    errors: list[BaseException] = []

    def run(path: Path) -> None:
        try:
            reports.append(_ingest(store, path, policy))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(p,)) for p in paths]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    distinct = len(set(rows))
    assert sum(r.new_records for r in reports) == distinct == store.record_count()
    assert sum(r.duplicate_records for r in reports) == 6000 - distinct


def _query_index_exists(store: NodeStore) -> bool:
    with store.engine.connect() as connection:
        names = connection.execute(
            text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"),
            {"t": "behaviour_record"},
        ).scalars()
        return QUERY_INDEX_NAME in set(names)


def test_a_first_import_rebuilds_the_query_index_and_a_rejected_one_keeps_it(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    bad = _csv(tmp_path / "bad.csv", GOOD_ROWS[0], BAD_ROWS[0][1])
    _problems(store, policy, bad)  # the first import into an empty node fails
    assert _query_index_exists(store)
    _ingest(store, _csv(tmp_path / "good.csv", *GOOD_ROWS), policy)
    assert _query_index_exists(store)
    start, end = _year(policy, 2024)
    assert store.quantities(pseudonym(KEY, ID_A), start, end) == {
        "TRC-BLOOD": 3,
        "TRC-ORGAN-PLEDGE": 1,
    }
    # A later import into a node that holds records keeps the index all along.
    _ingest(store, _csv(tmp_path / "more.csv", f"{ID_B},TRC-BLOOD,2024-05-05,1,HQ"), policy)
    assert _query_index_exists(store)
    assert store.quantities(pseudonym(KEY, ID_B), start, end) == {"TRC-BLOOD": 1}


def test_pseudonyms_and_record_keys_are_stored_as_32_bytes(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    _ingest(store, _csv(tmp_path / "export.csv", *GOOD_ROWS), policy)
    columns = BEHAVIOUR_RECORD.c
    with store.engine.connect() as connection:
        stored = connection.execute(select(columns.pseudonym, columns.record_key)).all()
    assert len(stored) == 5
    assert {bytes(p) for p, _ in stored} == {bytes.fromhex(pseudonym(KEY, i)) for i in ALL_IDS}
    assert all(len(p) == 32 and len(k) == 32 for p, k in stored)
    assert len({bytes(k) for _, k in stored}) == 5


def test_a_bad_value_seen_again_is_refused_again(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    # Validated values are cached per file; a refused value must never enter the cache.
    rows = [GOOD_ROWS[0], BAD_ROWS[0][1], GOOD_ROWS[0], BAD_ROWS[0][1], BAD_ROWS[10][1]]
    problems = _problems(store, policy, _csv(tmp_path / "export.csv", *rows))
    assert [n for n, _ in problems] == [3, 5, 6]
    assert "check digit" in problems[1][1]


def test_rows_that_cannot_count_until_certified_are_reported(
    store: NodeStore, policy: Policy, tmp_path: Path
) -> None:
    report = _ingest(store, _csv(tmp_path / "export.csv", *GOOD_ROWS), policy)
    assert policy.indicators["TRC-PLASMA"].requires_certification
    assert report.uncertified_records == 1  # ID_B's plasma donation has no certifier
    more = (
        f"{ID_C},TRC-BLOOD,2025-02-01,1,",
        f"{ID_C},TRC-BLOOD,2025-03-01,1,",
        f"{ID_C},TRC-BLOOD,2025-04-01,1,TRC-HQ",
    )
    again = _ingest(store, _csv(tmp_path / "more.csv", *more), policy)
    assert (again.new_records, again.uncertified_records) == (3, 2)
    # Stored all the same: a certified version may follow; today they count for nothing.
    c = pseudonym(KEY, ID_C)
    assert store.quantities(c, *_year(policy, 2025)) == {"TRC-BLOOD": 1}
