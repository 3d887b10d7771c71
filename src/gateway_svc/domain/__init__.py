"""gateway_svc's payment rules as plain Python: statuses and the one transition table,
the intent and refund as values, input validation, and the PSP outcome taxonomy. Nothing
here imports gRPC, SQLAlchemy or an HTTP client."""
