"""Times as a person reads them: ISO 8601 with the zone's offset, or a Thai date.

What a command prints for a person (a grant's end, a revocation, an access in a
citizen's history, a certificate's expiry) is ISO 8601 with the UTC offset of the zone
it is shown in, this machine's unless one is given: `2026-12-06T13:04:05+07:00`, never
Unix seconds and never a time without its zone. What a person reads in Thai (a consent
receipt's Thai lines) is a Thai date in the Buddhist era, as Thai documents date things:
`6 ธันวาคม พ.ศ. 2569 เวลา 13:04:05 น. (UTC+07:00)`. Data (`--json`, the wire, the logs)
keeps Unix seconds.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

# The Thai solar calendar counts years from the Buddha's passing: BE = CE + 543 (with
# the year beginning on 1 January, as it has since 1941, so for every date fedscore holds).
BUDDHIST_ERA_OFFSET = 543
THAI_MONTHS = (
    "มกราคม",
    "กุมภาพันธ์",
    "มีนาคม",
    "เมษายน",
    "พฤษภาคม",
    "มิถุนายน",
    "กรกฎาคม",
    "สิงหาคม",
    "กันยายน",
    "ตุลาคม",
    "พฤศจิกายน",
    "ธันวาคม",
)


def buddhist_era_year(common_era_year: int) -> int:
    """The Buddhist-era year (พ.ศ.) of a common-era year: 2026 -> 2569."""
    return common_era_year + BUDDHIST_ERA_OFFSET


def _moment(unix_seconds: float, zone: tzinfo | None) -> datetime:
    if zone is None:
        return datetime.fromtimestamp(unix_seconds).astimezone()
    return datetime.fromtimestamp(unix_seconds, zone)


def iso_time(unix_seconds: float, zone: tzinfo | None = None) -> str:
    """ISO 8601 to the second with the UTC offset: in `zone`, or this machine's zone."""
    return _moment(unix_seconds, zone).isoformat(timespec="seconds")


def _offset(moment: datetime) -> str:
    text = moment.strftime("%z")  # "+0700"
    return f"UTC{text[:3]}:{text[3:]}"


def thai_time(unix_seconds: float, zone: tzinfo | None = None) -> str:
    """A Thai date and time in the Buddhist era, with its UTC offset."""
    moment = _moment(unix_seconds, zone)
    year = buddhist_era_year(moment.year)
    month = THAI_MONTHS[moment.month - 1]
    return f"{moment.day} {month} พ.ศ. {year} เวลา {moment:%H:%M:%S} น. ({_offset(moment)})"
