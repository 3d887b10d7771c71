"""gateway_svc's payment use cases, one module each, every one the same protocol: reserve
(one statement moves the intent or refund to a pending state and binds the idempotency key)
→ call the PSP, outside any transaction → record the outcome in one statement. An unknown
outcome is never guessed: it stays pending until the recovery sweep asks the PSP."""
