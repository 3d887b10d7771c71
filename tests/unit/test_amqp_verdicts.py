"""A consumer's acks: those due in one turn of the loop go out together where AMQP allows it,
and never acknowledge a message still being handled (a `multiple` ack covers every
unacknowledged delivery up to its tag)."""

from __future__ import annotations

import asyncio

from paymesh.platform.amqp_consumer import ChannelVerdicts, Verdict


class Channel:
    """Records what a pika channel was asked to send."""

    def __init__(self):
        self.is_open = True
        self.sent: list[tuple] = []

    def basic_ack(self, tag, multiple=False):
        self.sent.append(("ack", tag, multiple))

    def basic_reject(self, tag, requeue):
        self.sent.append(("reject", tag, requeue))

    def basic_nack(self, tag, requeue):
        self.sent.append(("nack", tag, requeue))


def run(steps) -> list[tuple]:
    """Delivers tags 1..N, then runs `steps` (verdicts, or None for a turn of the loop)."""
    channel = Channel()

    async def main():
        verdicts = ChannelVerdicts(channel)
        for tag in range(1, 7):
            verdicts.delivered(tag)
        for step in steps:
            if step is None:
                await asyncio.sleep(0)
            else:
                verdicts.send(*step)
        await asyncio.sleep(0)

    asyncio.run(main())
    return channel.sent


def test_acks_of_one_turn_below_every_message_in_hand_go_as_one_frame():
    sent = run([(2, Verdict.ACK), (1, Verdict.ACK), (3, Verdict.ACK)])
    assert sent == [("ack", 3, True)]


def test_an_ack_above_a_message_in_hand_never_covers_it():
    # 2 is still being handled: 3 and 4 go alone, not as a `multiple` ack that would cover 2.
    sent = run([(1, Verdict.ACK), (3, Verdict.ACK), (4, Verdict.ACK)])
    assert sent == [("ack", 1, True), ("ack", 3, False), ("ack", 4, False)]
    # Once 2 is done, later acks below the lowest message in hand go together again.
    sent = run([(3, Verdict.ACK), None, (2, Verdict.ACK), (1, Verdict.ACK), (5, Verdict.ACK)])
    assert sent == [("ack", 3, False), ("ack", 2, True), ("ack", 5, False)]


def test_rejects_and_requeues_go_at_once_and_acks_around_them_stay_exact():
    sent = run([(1, Verdict.ACK), (2, Verdict.REJECT), (3, Verdict.REQUEUE), (4, Verdict.ACK)])
    # 2 and 3 are settled before the acks leave; the `multiple` ack up to 4 covers 1 and 4.
    assert sent == [("reject", 2, False), ("nack", 3, True), ("ack", 4, True)]


def test_nothing_is_sent_on_a_closed_channel():
    channel = Channel()

    async def main():
        verdicts = ChannelVerdicts(channel)
        verdicts.delivered(1)
        verdicts.send(1, Verdict.ACK)
        channel.is_open = False  # the connection dropped before the turn ended
        await asyncio.sleep(0)

    asyncio.run(main())
    assert channel.sent == []
