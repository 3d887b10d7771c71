"""Every SQL statement of gateway_svc's payments, by job: `intents` (an intent's reads, its
insert and its conditional changes), `refunds`, `lists` (pages and the sweep's scans),
`psp_events` (what a PSP's report writes), `disputes` (their reads); `rows` turns rows into
domain values and values into audit and outbox rows, and `statements` builds the one-statement
writes they share. No protobuf, no PSP here.

Each state change is ONE conditional statement (or one short transaction): the change itself,
its audit row(s), its outbox event and its idempotency key, written together or not at all.
The condition (`IntentChange.statuses` from the transition table, and the key of the PSP
operation it settles) makes a late or repeated writer a no-op instead of a double write."""
