"""What the audit service and its clients agree on, with nothing of either side.

The regulator's verifier and the citizen's history client call the audit service by
this name and page through entries in pages of at most this size; the servicer
(`audit/servicer.py`) serves the same. Neither client imports the servicer.
"""

from __future__ import annotations

from fedscore.v1 import audit_pb2

SERVICE_NAME: str = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
MAX_ENTRIES_PER_PAGE = 1_000
