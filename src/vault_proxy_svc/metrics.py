"""vault_proxy_svc's Prometheus instruments, created once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from paymesh.platform.metrics import PSP_CALL_ERRORS, PSP_CALLS  # noqa: F401 - shared

TOKENIZATIONS = Counter("vault_tokenizations_total", "Cards tokenized or rejected.", ["result"])
PSP_TOKEN_LOOKUPS = Counter(
    "vault_psp_token_lookups_total",
    "GetPspToken answers: `hit` from the cache, `miss` provisioned at the PSP.",
    ["psp", "result"],
)
PSP_PROVISIONING = Counter(
    "vault_psp_provisioning_total", "Cards created at a PSP, by outcome.", ["psp", "result"]
)
DECRYPT_SECONDS = Histogram(
    "vault_decrypt_duration_seconds",
    "Time to unwrap a data key and decrypt a card number.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
KEK_AGE = Gauge(
    "vault_kek_age_seconds", "Age of the primary key-encryption key; rotate before 90 days."
)
CARDS_ON_OLD_KEK = Gauge(
    "vault_cards_on_old_kek", "Cards whose data key is still wrapped by a non-primary KEK."
)
REWRAPPED = Counter("vault_rewrapped_total", "Data keys moved to the primary KEK.")
REWRAP_FAILURES = Counter(
    "vault_rewrap_failures_total",
    "Cards the re-wrap job could not move: their data key did not unwrap (see the log's"
    " rewrap_card_failed); retried every pass.",
)
