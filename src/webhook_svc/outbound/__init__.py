"""Merchant webhooks out: endpoints, the domain events taken from RabbitMQ and fanned out
to deliveries, and the deliverer that signs and sends them."""
