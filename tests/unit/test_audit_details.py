"""Large audit details are stored compressed by every writer; small ones stay as they are."""

from __future__ import annotations

from gateway_svc.domain.models import AuditEntry
from gateway_svc.repository.rows import audit_values as gateway_audit_values
from paymesh.platform.audit_details import read_details, stored_details
from rebill_svc.records import audit_values as rebill_audit_values

LARGE = {"reasons": [f"reason {i}: the customer asked again" for i in range(300)]}


def test_details_above_the_threshold_are_compressed_and_read_back_whole():
    stored, compressed = stored_details(LARGE, above=4096)
    assert stored == {"compressed": "zlib", "bytes": stored["bytes"]} and stored["bytes"] > 4096
    assert compressed is not None and len(compressed) < stored["bytes"] / 4
    assert read_details(stored, compressed) == LARGE
    assert stored_details({"small": 1}, above=4096) == ({"small": 1}, None)
    assert stored_details(LARGE, above=0) == (LARGE, None)  # 0: never


def test_the_gateways_and_rebills_audit_rows_compress_large_details():
    entry = AuditEntry("acct_1", "api", "refund", "re_1", "ok", LARGE)
    gateway = gateway_audit_values(entry)
    rebill = rebill_audit_values(
        merchant_id="acct_1", actor="worker", action="x", object_id="sub_1", result="ok", **LARGE
    )
    for values in (gateway, rebill):
        assert values["details"]["compressed"] == "zlib"
        assert read_details(values["details"], values["details_z"]) == LARGE
    assert (
        gateway_audit_values(AuditEntry("acct_1", "api", "a", "pi_1", "ok", {}))["details_z"]
        is None
    )
