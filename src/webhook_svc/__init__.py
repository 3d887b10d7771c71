"""webhook_svc: PSP webhooks in, signed merchant webhooks out."""
