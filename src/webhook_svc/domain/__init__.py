"""webhook_svc's rules as plain Python: what a delivery's outcome is, how its status moves,
when an endpoint is given up, which events a merchant can subscribe to."""
