"""rebill's queues. Job messages leave through the outbox onto the events exchange under
`rebill_job.<frequency>`; each frequency has its durable quorum queue. A message rejected by
a worker (unreadable, an unknown job), or delivered `DELIVERY_LIMIT` times without an ack,
goes to `rebill.dead` without blocking its queue."""

from __future__ import annotations

import json

from pika.adapters.blocking_connection import BlockingChannel

from rebill_svc.domain.subscriptions import QUEUES
from rebill_svc.records import job_routing_key

DEAD_EXCHANGE = "paymesh.rebill.dead"
DEAD_QUEUE = "rebill.dead"
# Part of the queues' declaration: RabbitMQ refuses a redeclaration with other arguments.
DELIVERY_LIMIT = 5
JOB_QUEUES = tuple(QUEUES.values())


def declare_queues(channel: BlockingChannel, events_exchange: str) -> None:
    channel.exchange_declare(events_exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(DEAD_EXCHANGE, exchange_type="fanout", durable=True)
    channel.queue_declare(DEAD_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(DEAD_QUEUE, DEAD_EXCHANGE)
    for queue in JOB_QUEUES:
        channel.queue_declare(
            queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": DEAD_EXCHANGE,
            },
        )
        channel.queue_bind(queue, events_exchange, routing_key=job_routing_key(queue))


def job_id_of(body: bytes) -> str | None:
    """The job a message names, or None if it is not a job message."""
    try:
        message = json.loads(body)
        job_id = message["data"]["object_id"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(job_id, str) or not job_id.startswith("rj_") or len(job_id) > 40:
        return None
    return job_id
