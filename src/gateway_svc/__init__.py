"""gateway_svc: payment intents, refunds, PSP connectors, merchants and keys."""
