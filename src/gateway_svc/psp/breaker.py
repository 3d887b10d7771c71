"""A PSP's circuit breaker: a failure ratio over a sliding window of recent calls, judged per
operation, as resilience4j's count- and time-based windows do.

Why not a library: pybreaker (used before), aiobreaker, purgatory and circuitbreaker count
consecutive failures only, and any success resets them: a card lookup's success, between the
three attempts of each charge, kept a dead PSP's breaker closed forever. aiomisc's breaker
judges a ratio but over time buckets only, with no minimum number of calls and a gradual
recovery instead of probes; the one Python resilience4j port (interlock-cb) is months old.
This module is the resilience4j rule in ~150 lines:

- closed: each operation (authorize, capture, void, refund, find, card) keeps its last
  `window_calls` outcomes younger than `window_seconds`. Once one operation's window holds
  `min_calls` and at least `failure_ratio` of them failed, the breaker opens. Windows are per
  operation so that many successes of one kind (captures, card lookups) never dilute failing
  charges: a PSP that fails half its authorizations is unhealthy, whatever else works.
- open: every call is refused at once (the router fails over without calling the PSP),
  for `open_seconds`.
- half-open: `probes` calls are let through; the first failure opens it again, `probes`
  successes close it with empty windows. Further calls are refused until then.

A call permitted in one state whose answer comes back after the state changed is not
counted (its ticket names the state's generation). Outcomes: the PSP's own failure counts
as a failure; an answer (success, decline, refusal) as a success; anything that does not
judge the PSP (our own overload, the vault down, a cancelled call) is not counted and gives
its probe back."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum


class State(IntEnum):
    """The values of psp_circuit_breaker_state."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


class CircuitOpen(Exception):
    """The breaker refused the call: nothing was sent."""


@dataclass(frozen=True)
class BreakerPolicy:
    failure_ratio: float = 0.5
    window_calls: int = 20
    window_seconds: float = 60.0
    min_calls: int = 10
    open_seconds: float = 30.0
    probes: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio <= 1:
            raise ValueError("failure_ratio must be in (0, 1]")
        if not 1 <= self.min_calls <= self.window_calls:
            raise ValueError("min_calls must be between 1 and window_calls")
        if self.window_seconds <= 0 or self.open_seconds <= 0 or self.probes < 1:
            raise ValueError("window_seconds, open_seconds and probes must be positive")


@dataclass(frozen=True)
class Ticket:
    """A permitted call; `probe` if it holds one of the half-open state's probes."""

    generation: int
    probe: bool


class SlidingWindowBreaker:
    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        on_change: Callable[[str, State, State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.policy = policy
        self._on_change = on_change
        self._clock = clock
        self._state = State.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._windows: dict[str, deque[tuple[float, bool]]] = {}
        self._probes_out = 0
        self._probe_successes = 0

    @property
    def state(self) -> State:
        if (
            self._state is State.OPEN
            and self._clock() - self._opened_at >= self.policy.open_seconds
        ):
            self._move(State.HALF_OPEN)
        return self._state

    def permit(self, probe: bool = True) -> Ticket:
        """Lets a call through or raises CircuitOpen. `probe=False`: a step that is gated by
        the breaker but never judges it (it takes no half-open probe)."""
        state = self.state
        if state is State.OPEN:
            raise CircuitOpen(f"{self.name}: circuit open")
        if state is State.HALF_OPEN and probe:
            if self._probes_out + self._probe_successes >= self.policy.probes:
                raise CircuitOpen(f"{self.name}: circuit half-open, probes out")
            self._probes_out += 1
            return Ticket(self._generation, probe=True)
        return Ticket(self._generation, probe=False)

    def record(self, ticket: Ticket, operation: str, outcome: Outcome) -> None:
        """The answer to a permitted call."""
        if ticket.generation != self._generation:
            return  # permitted before the last state change: judged by nothing now
        if ticket.probe:
            self._probes_out -= 1
        self._judge(operation, outcome, ticket.probe)

    def observe(self, operation: str, outcome: Outcome) -> None:
        """An answer the PSP gave to a call made elsewhere (the vault's card creation):
        it joins the operation's window, and a failure reopens a half-open breaker."""
        if self.state is not State.OPEN:
            self._judge(operation, outcome, probe=False)

    def _judge(self, operation: str, outcome: Outcome, probe: bool) -> None:
        if outcome is Outcome.IGNORED:
            return
        failed = outcome is Outcome.FAILURE
        if self._state is State.HALF_OPEN:
            if failed:
                self._open()
            elif probe:
                self._probe_successes += 1
                if self._probe_successes >= self.policy.probes:
                    self._move(State.CLOSED)
            return
        now = self._clock()
        window = self._windows.setdefault(operation, deque(maxlen=self.policy.window_calls))
        window.append((now, failed))
        while window and window[0][0] <= now - self.policy.window_seconds:
            window.popleft()
        failures = sum(1 for _, bad in window if bad)
        if len(window) >= self.policy.min_calls and failures >= self.policy.failure_ratio * len(
            window
        ):
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(State.OPEN)

    def _move(self, new: State) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._windows.clear()
        self._probes_out = self._probe_successes = 0
        if self._on_change is not None and old is not new:
            self._on_change(self.name, old, new)
