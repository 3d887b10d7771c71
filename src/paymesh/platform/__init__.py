"""Plumbing shared by every paymesh service: settings, logging, tracing, metrics, errors,
health, database, AMQP, the transactional outbox and the gRPC server lifecycle.

No business logic lives here, and nothing here imports a service package.
"""
