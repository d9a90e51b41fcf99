"""The Redis carrier of shared state (spec/behaviour.md §26.6).

Two threads of its own, with the ``redis`` library's blocking client, serve
the sync and the async client alike (asyncio or trio): nothing here ever runs
on a request's path or an event loop.

* The publisher takes the core's ``Publish`` and ``ClaimProbe`` actions from a
  bounded queue (the oldest dropped when full), sends each report on the
  channel, keeps the snapshot keys, and answers claims with ``SET NX PX``.
* The subscriber feeds other processes' reports to the core as
  ``PeerReport`` events and, after every (re)subscription, reads the snapshot
  so a late or reconnected process catches up.

Redis down or slow: commands time out quickly, in these threads only; the
first failure after a success is logged once, and both threads retry with
exponential backoff. Facts waiting meanwhile are aged by their wait when they
are finally sent, so every length stays true on the receiver's clock.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

import msgspec
import redis

from lbcore import (
    Action,
    BreakerClosed,
    BreakerOpened,
    ClaimProbe,
    CooledDown,
    Event,
    Failure,
    FailureSeen,
    PeerFact,
    PeerReport,
    ProbeClaimed,
    ProbeRefused,
    Publish,
    TokensUsed,
)

from ._link import monotonic_ms
from ._shared_config import SharedState
from .wire import redact_secrets

__all__ = ("RedisShare",)

LOGGER: Final = logging.getLogger("lbtransports.shared")
#: Actions waiting to be sent; beyond this the oldest is dropped.
QUEUE_LIMIT: Final = 1024
#: Every Redis command gives up after this long (in these threads only).
COMMAND_TIMEOUT_S: Final = 0.5
BACKOFF_START_S: Final = 0.05
BACKOFF_CAP_S: Final = 2.0
#: A TPM counter outlives the five-minute window by a minute.
TPM_TTL_MS: Final = 360_000
SNAPSHOT_ORIGIN: Final = "snapshot"


class _Report(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One message on the channel."""

    origin: str
    seq: int
    facts: tuple[PeerFact, ...]


_ENCODE: Final = msgspec.json.Encoder().encode
_DECODE_REPORT: Final = msgspec.json.Decoder(_Report).decode
_DECODE_FAILURE: Final = msgspec.json.Decoder(Failure).decode

#: How a core event is built once the link has read its clock.
EventAt = Callable[[int], Event]


def aged(fact: PeerFact, waited: int) -> PeerFact | None:
    """``fact`` as it stands ``waited`` ms after it was recorded; None once it means nothing."""
    if waited <= 0:
        return fact
    if isinstance(fact, FailureSeen | TokensUsed):
        return msgspec.structs.replace(fact, age_ms=fact.age_ms + waited)
    if isinstance(fact, BreakerOpened):
        left = fact.recovery_left_ms - waited
        return msgspec.structs.replace(fact, recovery_left_ms=left) if left > 0 else None
    if isinstance(fact, CooledDown):
        left = fact.left_ms - waited
        return msgspec.structs.replace(fact, left_ms=left) if left > 0 else None
    return fact


class RedisShare:
    """Carries one client's facts to and from every other process on the same prefix."""

    def __init__(
        self,
        shared: SharedState,
        feed: Callable[[EventAt], None],
        backends: tuple[str, ...],
        recovery_ms: int,
    ) -> None:
        self._shared = shared
        self._feed = feed
        self._backends = frozenset(backends)
        self._claim_ms = max(1, recovery_ms)
        #: Random per adapter: two processes (or two clients in one) never share it.
        self.origin = secrets.token_hex(8)
        self._channel = shared.key("events")
        self._redis = redis.Redis.from_url(
            shared.url,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            retry_on_timeout=False,
        )
        self._password = self._redis.connection_pool.connection_kwargs.get("password") or ""
        self._queue: deque[tuple[int, Publish | ClaimProbe]] = deque(maxlen=QUEUE_LIMIT)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._seq = 0
        #: Snapshot reads so far: the seq of their reports.
        self._catch_ups = 0
        self._down_lock = threading.Lock()
        self._down = False
        #: Reports heard and published, facts dropped (a full queue, unknown backends).
        self.heard = 0
        self.published = 0
        self.dropped = 0
        self._threads = (
            threading.Thread(target=self._publishing, name="lb-shared-publish", daemon=True),
            threading.Thread(target=self._subscribing, name="lb-shared-subscribe", daemon=True),
        )
        #: Set once the first subscription and catch-up read are done (for tests and tools).
        self.subscribed = threading.Event()

    def __repr__(self) -> str:
        return f"RedisShare(url={self._shared.shown_url!r}, prefix={self._shared.prefix!r})"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop both threads (sending what is queued if Redis answers) and close the pool."""
        self._stop.set()
        self._ready.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout_s)
        self._redis.close()

    # -- from the core (under the client's guard: never blocks) ----------------

    def offer(self, action: Action) -> None:
        if isinstance(action, Publish | ClaimProbe):
            if len(self._queue) == QUEUE_LIMIT:
                self.dropped += 1
            self._queue.append((monotonic_ms(), action))
            self._ready.set()

    # -- health ------------------------------------------------------------------

    def _failed(self, error: Exception) -> None:
        with self._down_lock:
            if self._down:
                return
            self._down = True
        text = redact_secrets(str(error), (self._password,))
        LOGGER.warning(
            "shared state: Redis at %s is unreachable (%s: %s); going on with local state "
            "and reconnecting with backoff",
            self._shared.shown_url,
            type(error).__name__,
            text,
        )

    def _reached(self) -> None:
        with self._down_lock:
            if not self._down:
                return
            self._down = False
        LOGGER.info("shared state: Redis at %s reachable again", self._shared.shown_url)

    def _backoffs(self) -> Iterator[float]:
        delay = BACKOFF_START_S
        while True:
            yield delay
            delay = min(BACKOFF_CAP_S, delay * 2)

    # -- publishing ----------------------------------------------------------------

    def _publishing(self) -> None:
        backoff = self._backoffs()
        while True:
            self._ready.wait(0.5)
            self._ready.clear()
            try:
                self._send_queued()
            except (redis.RedisError, OSError) as error:
                self._failed(error)
                self._grant_waiting_claims()
                if self._stop.wait(next(backoff)):
                    return
                self._ready.set()
                continue
            backoff = self._backoffs()
            if self._stop.is_set():
                return

    def _send_queued(self) -> None:
        while self._queue:
            queued_at, action = self._queue[0]
            try:
                if isinstance(action, ClaimProbe):
                    self._claim(action.backend)
                else:
                    self._publish(action.facts, monotonic_ms() - queued_at)
            except redis.ResponseError as error:
                # Redis answered but refused (an old server, a read-only replica): sending
                # the same again cannot help, so this one is dropped, not retried forever.
                self.dropped += 1
                self._failed(error)
            # Taken off only once sent: a failure leaves it for the next try.
            if self._queue and self._queue[0][1] is action:
                self._queue.popleft()
            self._reached()

    def _grant_waiting_claims(self) -> None:
        """Redis is down: every claim waiting behind unsent facts is granted now (spec §26.4)."""
        waiting = [item for item in tuple(self._queue) if isinstance(item[1], ClaimProbe)]
        for item in waiting:
            with contextlib.suppress(ValueError):
                self._queue.remove(item)
            claim = item[1]
            assert isinstance(claim, ClaimProbe)
            self._feed(_claimed(claim.backend))

    def _claim(self, backend: str) -> None:
        try:
            granted = self._redis.set(
                self._shared.key("probe", backend), self.origin, nx=True, px=self._claim_ms
            )
        except (redis.RedisError, OSError) as error:
            # Nobody can be asked: probe locally, as without sharing (spec §26.4).
            self._failed(error)
            granted = True
        if granted:
            self._feed(_claimed(backend))
        else:
            self._feed(lambda at: ProbeRefused(at=at, backend=backend))

    def _publish(self, facts: tuple[PeerFact, ...], waited: int) -> None:
        fresh = tuple(f for f in (aged(fact, waited) for fact in facts) if f is not None)
        if not fresh:
            return
        self._seq += 1
        key = self._shared.key
        pipe = self._redis.pipeline(transaction=False)
        report = _Report(origin=self.origin, seq=self._seq, facts=fresh)
        pipe.publish(self._channel, _ENCODE(report))
        for fact in fresh:
            if isinstance(fact, BreakerOpened):
                pipe.set(key("breaker", fact.backend), self.origin, px=fact.recovery_left_ms)
            elif isinstance(fact, BreakerClosed):
                pipe.delete(key("breaker", fact.backend))
            elif isinstance(fact, CooledDown):
                name = key("cooldown", fact.backend)
                pipe.set(name, _ENCODE(fact.failure), px=fact.left_ms, nx=True)
                pipe.pexpire(name, fact.left_ms, gt=True)
            elif isinstance(fact, TokensUsed) and fact.tokens > 0:
                minute = (monotonic_ms() - fact.age_ms) // 60_000
                name = key("tpm", fact.backend, self.origin, str(minute))
                pipe.incrby(name, fact.tokens)
                pipe.pexpire(name, TPM_TTL_MS, nx=True)
        pipe.execute()
        self.published += 1

    # -- hearing -----------------------------------------------------------------

    def _subscribing(self) -> None:
        backoff = self._backoffs()
        first = True
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                # Subscribed first, then read: nothing published in between is missed.
                self._catch_up(with_tokens=first)
                first = False
                self._reached()
                self.subscribed.set()
                backoff = self._backoffs()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.1)
                    if message is not None and message.get("type") == "message":
                        self._hear(message["data"])
            except (redis.RedisError, OSError) as error:
                self._failed(error)
                self._stop.wait(next(backoff))
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _hear(self, data: object) -> None:
        if not isinstance(data, bytes | str):
            return
        try:
            report = _DECODE_REPORT(data)
        except (msgspec.DecodeError, ValueError):
            self.dropped += 1  # malformed: another version, or not ours
            return
        if report.origin in (self.origin, SNAPSHOT_ORIGIN):
            return
        self._deliver(report.origin, report.seq, report.facts)

    def _deliver(self, origin: str, seq: int, facts: tuple[PeerFact, ...]) -> None:
        known = tuple(f for f in facts if f.backend in self._backends)
        self.dropped += len(facts) - len(known)
        if not known or not origin or seq < 0:
            return
        self.heard += 1
        self._feed(lambda at: PeerReport(at=at, origin=origin, seq=seq, facts=known))

    def _catch_up(self, *, with_tokens: bool) -> None:
        """Read the snapshot keys and feed them as one report (spec §26.6)."""
        facts: list[PeerFact] = []
        for backend, left, holder in self._read("breaker"):
            if holder == self.origin.encode():
                continue  # our own opening: the core has it already
            facts.append(BreakerOpened(backend=backend, recovery_left_ms=left))
        for backend, left, value in self._read("cooldown"):
            try:
                failure = _DECODE_FAILURE(value)
            except (msgspec.DecodeError, ValueError):
                continue
            facts.append(CooledDown(backend=backend, left_ms=left, failure=failure))
        if with_tokens:
            for rest, left, value in self._read("tpm"):
                backend, origin, _minute = [*rest.rsplit(":", 2), "", ""][:3]
                if origin == self.origin or not value.isdigit():
                    continue
                age = max(0, TPM_TTL_MS - left)
                facts.append(TokensUsed(backend=backend, tokens=int(value), age_ms=age))
        if facts:
            self._catch_ups += 1
            self._deliver(SNAPSHOT_ORIGIN, self._catch_ups, tuple(facts))

    def _read(self, kind: str) -> list[tuple[str, int, bytes]]:
        """Every ``<prefix>:<kind>:<rest>`` key: ``rest``, its PTTL and its value."""
        head = self._shared.key(kind) + ":"
        names = list(self._redis.scan_iter(match=_glob_escape(head) + "*", count=500))
        if not names:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.pttl(name)
            pipe.get(name)
        answers = pipe.execute()
        found = []
        for index, name in enumerate(names):
            left, value = answers[2 * index], answers[2 * index + 1]
            if not isinstance(left, int) or left <= 0 or value is None:
                continue
            text = name.decode() if isinstance(name, bytes) else str(name)
            found.append((text[len(head) :], left, value))
        return found


def _claimed(backend: str) -> EventAt:
    def build(at: int) -> Event:
        return ProbeClaimed(at=at, backend=backend)

    return build


def _glob_escape(text: str) -> str:
    """A prefix matched literally by SCAN's glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
