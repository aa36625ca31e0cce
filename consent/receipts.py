"""Consent receipts: what the citizen keeps as proof of a grant or a withdrawal.

Fields follow ISO/IEC TS 27560 (who is the controller, which purpose, for whom, when,
on what legal basis, how to withdraw). Invariants:
- A receipt is always signed by the registry, so the citizen can show it to anyone.
- No part of the national ID is in a receipt, not even a few digits: the function is
  never given it. The citizen recognises their receipt by its token id (which also
  appears in the consent token they hold and in the withdrawal instructions), the
  purpose and its description, the relying party, the agencies asked and the times.
- Every receipt says how to withdraw, in Thai and in English, in words a citizen can follow.
- `receipt_text` renders a receipt for the citizen to read: every field under a Thai and
  an English label, parties by their Thai and English names where the policy has them,
  and every time twice, as a Thai date in the Buddhist era and in ISO 8601 with its UTC
  offset (`fedscore.times`). It is a rendering of the signed fields, not part of them.
"""

from __future__ import annotations

import secrets
from datetime import tzinfo

from fedscore.times import iso_time, thai_time
from fedscore.v1.consent_pb2 import ConsentReceipt, ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_message
from keys.signing import SigningKey
from policies.model import Policy


def how_to_withdraw(token_id: str) -> str:
    """How to withdraw, in Thai and then English (the receipt is the citizen's to keep)."""
    command = (
        "`fedscore consent revoke --workdir <federation folder> --citizen <your national ID> "
        f"--token-id {token_id}`"
    )
    thai = (
        "ท่านถอนความยินยอมนี้ได้ทุกเมื่อ ง่ายเท่ากับตอนให้ความยินยอม: ใช้คำสั่ง "
        f"{command} หรือผ่านพอร์ทัลประชาชน "
        "การถอนความยินยอมมีผลกับทุกหน่วยงานและผู้ประสานงานทันที "
        "หลังจากนั้นไม่มีผู้ใดใช้คะแนนพฤติกรรมที่ดีของท่านภายใต้ความยินยอมนี้ได้อีก"
    )
    english = (
        f"You may withdraw this consent at any time, as easily as you gave it: run {command} "
        "or use the citizen portal. Withdrawal reaches every agency and the coordinator at "
        "once; nobody may use your score for positive behaviour under this consent afterwards."
    )
    return f"{thai}\n{english}"


def signed_receipt(
    controller: str,
    key: SigningKey,
    policy: Policy,
    token: ConsentToken,
    *,
    event: str,
    event_time: int,
) -> Envelope:
    """The receipt for `event` (RECEIPT_GRANTED or RECEIPT_REVOKED) on `token`, signed by `key`."""
    purpose = policy.purposes.get(token.purpose_id)
    receipt = ConsentReceipt(
        receipt_id=secrets.token_hex(16),
        token_id=token.token_id,
        event=event,
        controller=controller,
        purpose_id=token.purpose_id,
        purpose_description=purpose.description if purpose is not None else "",
        relying_party=token.relying_party,
        agencies=list(token.agencies),
        event_time=event_time,
        not_before=token.not_before,
        not_after=token.not_after,
        legal_basis=token.legal_basis,
        how_to_withdraw=how_to_withdraw(token.token_id),
    )
    return sign_message(receipt, key)


# (Thai, English) of each event a receipt records.
EVENTS = {
    "granted": ("ให้ความยินยอม", "consent given"),
    "revoked": ("ถอนความยินยอม", "consent withdrawn"),
}


def _names(policy: Policy | None, party_id: str) -> str:
    """A party's id with its Thai and English names, where the policy has them."""
    known = None
    if policy is not None:
        known = policy.agencies.get(party_id) or policy.relying_parties.get(party_id)
    return f"{known.name_th} / {known.name} ({party_id})" if known is not None else party_id


def _when(unix_seconds: int, zone: tzinfo | None) -> str:
    return f"{thai_time(unix_seconds, zone)} / {iso_time(unix_seconds, zone)}"


def receipt_text(
    receipt: ConsentReceipt, policy: Policy | None = None, zone: tzinfo | None = None
) -> str:
    """The receipt as a citizen reads it: each field under a Thai and an English label."""
    event_th, event_en = EVENTS.get(receipt.event, (receipt.event, receipt.event))
    agencies = "; ".join(_names(policy, agency) for agency in receipt.agencies) or "-"
    fields = [
        ("เหตุการณ์", "Event", f"{event_th} / {event_en}"),
        ("เมื่อ", "When", _when(receipt.event_time, zone)),
        ("รหัสความยินยอม", "Consent id", receipt.token_id),
        ("วัตถุประสงค์", "Purpose", receipt.purpose_id),
        ("รายละเอียดวัตถุประสงค์", "Purpose description", receipt.purpose_description or "-"),
        ("ผู้ขอใช้ข้อมูล", "Relying party", _names(policy, receipt.relying_party)),
        ("หน่วยงานที่ถูกถาม", "Agencies asked", agencies),
        ("มีผลตั้งแต่", "Valid from", _when(receipt.not_before, zone)),
        ("ใช้ได้ถึง", "Valid until", _when(receipt.not_after, zone)),
        ("ฐานทางกฎหมาย", "Legal basis", receipt.legal_basis),
        ("ผู้ควบคุมข้อมูล", "Controller", _names(policy, receipt.controller)),
        ("เลขที่ใบรับ", "Receipt id", receipt.receipt_id),
    ]
    lines = ["ใบรับความยินยอม / Consent receipt"]
    lines += [f"{thai} / {english}: {value}" for thai, english, value in fields]
    lines += ["วิธีถอนความยินยอม / How to withdraw:", receipt.how_to_withdraw]
    return "\n".join(lines)
