"""When an endpoint is given up: at once when it answers 410, or once every delivery to it
has failed for `disable_after` (Standard Webhooks' five days). A success clears the count."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum


class EndpointStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class DisabledReason(StrEnum):
    GONE = "gone"  # the endpoint answered 410
    FAILING = "failing"  # every delivery failed for `disable_after`


def disabled_reason(
    *, gone: bool, failing_since: datetime | None, now: datetime, disable_after: timedelta
) -> DisabledReason | None:
    """Why an enabled endpoint whose deliveries just failed is to be disabled, or None.
    `failing_since` is when its failures began (None: this batch's are its first)."""
    if gone:
        return DisabledReason.GONE
    if failing_since is not None and failing_since < now - disable_after:
        return DisabledReason.FAILING
    return None
