"""Times a person reads: ISO 8601 with the UTC offset; Thai dates in the Buddhist era."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from consent.receipts import receipt_text
from fedscore.runtime.logs import TextFormatter
from fedscore.times import buddhist_era_year, iso_time, thai_time
from fedscore.v1.consent_pb2 import ConsentReceipt

BANGKOK = ZoneInfo("Asia/Bangkok")
# 2026-12-06 13:04:05 in Bangkok (UTC+7): 06:04:05 UTC.
MOMENT = int(datetime(2026, 12, 6, 6, 4, 5, tzinfo=UTC).timestamp())
ROOT = Path(__file__).resolve().parent.parent


def test_the_buddhist_era_is_543_years_ahead() -> None:
    assert buddhist_era_year(2026) == 2569
    assert buddhist_era_year(1941) == 2484  # the first year that began on 1 January
    assert buddhist_era_year(2000) == 2543


def test_iso_8601_with_the_offset_of_the_zone() -> None:
    assert iso_time(MOMENT, BANGKOK) == "2026-12-06T13:04:05+07:00"
    assert iso_time(MOMENT, UTC) == "2026-12-06T06:04:05+00:00"
    assert iso_time(MOMENT, timezone(timedelta(hours=-3, minutes=-30))).endswith("-03:30")
    local = iso_time(MOMENT)  # this machine's zone: still an offset, still the same moment
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", local)
    assert datetime.fromisoformat(local).timestamp() == MOMENT


def test_a_thai_date_is_in_the_buddhist_era() -> None:
    assert thai_time(MOMENT, BANGKOK) == "6 ธันวาคม พ.ศ. 2569 เวลา 13:04:05 น. (UTC+07:00)"
    # The last second of 2026 in Bangkok is still 2569; the next is 2570.
    new_year = int(datetime(2027, 1, 1, tzinfo=BANGKOK).timestamp())
    assert "ธันวาคม พ.ศ. 2569" in thai_time(new_year - 1, BANGKOK)
    assert thai_time(new_year, BANGKOK).startswith("1 มกราคม พ.ศ. 2570")


def _receipt(event: str) -> ConsentReceipt:
    return ConsentReceipt(
        receipt_id="r" * 32, token_id="t" * 32, event=event, controller="consent-registry",
        purpose_id="ptt-fuel-discount", purpose_description="PTT fuel discount",
        relying_party="ptt", agencies=["trc", "dsd"], event_time=MOMENT,
        not_before=MOMENT, not_after=MOMENT + 30 * 86400, legal_basis="PDPA s.19 consent",
        how_to_withdraw="ท่านถอนความยินยอมนี้ได้ทุกเมื่อ\nYou may withdraw this consent",
    )  # fmt: skip


LABELS = [
    ("เหตุการณ์", "Event"), ("เมื่อ", "When"), ("รหัสความยินยอม", "Consent id"),
    ("วัตถุประสงค์", "Purpose"), ("รายละเอียดวัตถุประสงค์", "Purpose description"),
    ("ผู้ขอใช้ข้อมูล", "Relying party"), ("หน่วยงานที่ถูกถาม", "Agencies asked"),
    ("มีผลตั้งแต่", "Valid from"), ("ใช้ได้ถึง", "Valid until"),
    ("ฐานทางกฎหมาย", "Legal basis"), ("ผู้ควบคุมข้อมูล", "Controller"),
    ("เลขที่ใบรับ", "Receipt id"),
]  # fmt: skip


def test_every_field_of_a_receipt_has_a_thai_and_an_english_label() -> None:
    text = receipt_text(_receipt("granted"), zone=BANGKOK)
    lines = text.splitlines()
    assert lines[0] == "ใบรับความยินยอม / Consent receipt"
    for thai, english in LABELS:
        assert sum(line.startswith(f"{thai} / {english}: ") for line in lines) == 1, english
    # Every field of the signed receipt is shown (a new field needs a label here too).
    shown = {"receipt_id", "token_id", "event", "controller", "purpose_id",
             "purpose_description", "relying_party", "agencies", "event_time", "not_before",
             "not_after", "legal_basis", "how_to_withdraw"}  # fmt: skip
    assert shown == set(ConsentReceipt.DESCRIPTOR.fields_by_name)
    assert "เหตุการณ์ / Event: ให้ความยินยอม / consent given" in lines
    valid_until = next(line for line in lines if line.startswith("ใช้ได้ถึง"))
    assert "5 มกราคม พ.ศ. 2570" in valid_until and "2027-01-05T13:04:05+07:00" in valid_until
    assert "วิธีถอนความยินยอม / How to withdraw:" in lines
    assert text.endswith("You may withdraw this consent")
    withdrawn = receipt_text(_receipt("revoked"), zone=BANGKOK)
    assert "เหตุการณ์ / Event: ถอนความยินยอม / consent withdrawn" in withdrawn.splitlines()


def test_a_receipt_names_parties_in_thai_and_english_from_the_policy(tmp_path: Path) -> None:
    from fedscore.apps.federation import init_federation
    from fedscore.runtime.party import load_party

    init_federation(tmp_path / "federation", fast_kdf=True)
    policy = load_party(tmp_path / "federation", "citizen-portal").policy
    text = receipt_text(_receipt("granted"), policy, BANGKOK)
    assert "บริษัท ปตท. จำกัด (มหาชน) / PTT Public Company Limited (ptt)" in text
    assert "สภากาชาดไทย / Thai Red Cross Society (trc)" in text


def test_a_text_log_line_carries_iso_time_with_its_offset() -> None:
    record = logging.LogRecord("fedscore.calls", logging.INFO, __file__, 1, "m", (), None)
    record.request_id = "-"
    line = TextFormatter("%(asctime)s %(levelname)s %(message)s").format(record)
    stamp = line.split(" ", 1)[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", stamp), line
    assert abs(datetime.fromisoformat(stamp).timestamp() - record.created) < 0.001


@pytest.mark.parametrize("folder", ["fedscore/apps/cli", "fedscore/apps/custodian.py"])
def test_no_command_prints_a_time_without_its_zone(folder: str) -> None:
    """What the commands print goes through fedscore.times: no strftime, no bare seconds."""
    path = ROOT / folder
    for source in [path] if path.is_file() else sorted(path.glob("*.py")):
        text = source.read_text(encoding="utf-8")
        for banned in ("strftime(", "time.localtime(", "time.gmtime(", "(Unix time)"):
            assert banned not in text, f"{source.relative_to(ROOT)} uses {banned}"
