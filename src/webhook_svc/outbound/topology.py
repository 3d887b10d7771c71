"""webhook_svc's queue: `webhook.events`, a durable quorum queue bound to every event type
merchants can subscribe to on the events exchange (replicas share it). A message that is not
such an event, or that fails `DELIVERY_LIMIT` times, goes to `webhook.events.dead`."""

from __future__ import annotations

from pika.adapters.blocking_connection import BlockingChannel

from webhook_svc.domain.rules import EVENT_TYPES

EVENTS_QUEUE = "webhook.events"
DEAD_EXCHANGE = "paymesh.webhook.dead"
DEAD_QUEUE = "webhook.events.dead"
# Part of the queue's declaration: RabbitMQ refuses a redeclaration with other arguments.
DELIVERY_LIMIT = 20


def declare_queues(channel: BlockingChannel, events_exchange: str) -> None:
    channel.exchange_declare(events_exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(DEAD_EXCHANGE, exchange_type="fanout", durable=True)
    channel.queue_declare(DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(DEAD_QUEUE, DEAD_EXCHANGE)
    channel.queue_declare(
        EVENTS_QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_EXCHANGE,
        },
    )
    for event_type in sorted(EVENT_TYPES):
        channel.queue_bind(EVENTS_QUEUE, events_exchange, routing_key=event_type)
