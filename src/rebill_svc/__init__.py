"""rebill_svc: subscriptions, the renewal scheduler and rebill workers."""
