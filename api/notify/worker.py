"""The outbox worker: lease due rows (FOR UPDATE SKIP LOCKED), send outside, record."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.clock import Clock, SystemClock
from api.database import database_away, transaction
from api.members.crypto import contact_cipher
from api.members.errors import ContactUnreadable
from api.metrics import count_deliveries
from api.notify import repository as repo
from api.notify.channels import (
    Channel,
    EmailChannel,
    HttpPoster,
    Message,
    http_tls_context,
    make_channels,
    scrub,
)
from api.notify.errors import DeliveryError
from api.notify.quiet import FailureLog
from api.notify.service import backoff_s
from api.settings import Settings

try:  # uvloop (with uvicorn[standard]): the same sends for less CPU than asyncio's own loop
    import uvloop

    _new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    _new_loop = asyncio.new_event_loop

log = logging.getLogger("ern.notify")

Claim = repo.Claimed
STOP_CHECK_S = 0.5
# Rows leased per round, and sends in flight at once (on one event loop). A round waits for
# its slowest send and for two commits: under a burst (32 clients raising ~150 alerts/s, 9
# messages each) 64/32 fell seconds behind, 256/128 kept messages within ~40 ms of the 201
# when `ern worker` had the CPU first (docs/benchmarks.md). The lease stays at two waves.
DEFAULT_BATCH_SIZE = 256
DEFAULT_CONCURRENCY = 128
ABANDONED_CHECK = timedelta(seconds=1)
RECORD_RETRY_CAP_S = 2.0  # between tries to record a batch's outcomes while the database is away
# Threads for blocking sends (e-mail) and name lookups: HTTP sends need none, and 128 SMTP
# connections at once would exceed what a relay lets one client open.
BLOCKING_THREADS = 32
# Decrypted contacts kept (by ciphertext) before the memo starts afresh.
CONTACT_MEMO_SIZE = 4096


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: sent, to be retried at ``next_attempt_at``, or failed for good."""

    state: Literal["sent", "pending", "failed"]
    at: datetime
    next_attempt_at: datetime
    error: str | None = None


class OutboxWorker:
    """Drains the outbox: at-least-once delivery with the same delivery id on every attempt.

    A lease (``state='sending'``, ``next_attempt_at`` = lease end) marks a row taken; a worker that
    dies after sending leaves the lease to expire, and the row is sent again under the same id.
    A round leases up to ``batch_size`` rows in one statement, sends them ``concurrency`` at a
    time from one event loop (HTTP connections kept alive per host, e-mail in threads), and
    records every outcome in one statement.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        clock: Clock | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        lease_s: float | None = None,
        rng: random.Random | None = None,
        name: str = "ern-outbox",
        listen: bool = True,
    ) -> None:
        self._factory = session_factory
        self._settings = settings
        self._clock = clock or SystemClock()
        self.batch_size = batch_size
        self.concurrency = max(1, min(concurrency, batch_size))
        # Long enough for the slowest attempt (SMTP has several timed round trips) in each of
        # the waves a batch is sent in, so that no lease runs out while its row is in flight.
        waves = math.ceil(batch_size / self.concurrency)
        self.lease_s = (
            lease_s if lease_s is not None else waves * max(30.0, 6 * settings.delivery_timeout_s)
        )
        self._rng = rng or random.Random()
        self._abandoned_checked_at: datetime | None = None
        self._name = name
        self._cipher = contact_cipher(settings)
        self._contacts: dict[bytes | None, dict[str, Any] | ContactUnreadable] = {}
        # One event loop sends every batch of this worker, from whichever thread runs it (one at
        # a time): a thread per request in flight cost ~0.6 ms of CPU per delivery, mostly
        # thread hand-offs and http.client; the loop needs a fraction of that.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self._poster = HttpPoster(
            timeout_s=settings.delivery_timeout_s,
            max_idle=max(8, self.concurrency),
            tls=http_tls_context(settings),
            per_origin=settings.http_connections_per_host,
        )
        self._channels: dict[str, Channel] = make_channels(settings, self._poster)
        email = self._channels["email"]
        assert isinstance(email, EmailChannel)
        self._email = email
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Failures by (channel, cause) once per interval with a count; each delivery at DEBUG.
        self.failure_log = FailureLog(log)
        # LISTEN needs a real engine; sessions bound to one test connection just poll.
        bind = session_factory.kw.get("bind")
        self._wakeup = repo.Wakeup(bind) if listen and isinstance(bind, Engine) else None

    @property
    def listening(self) -> bool:
        """Whether enqueues wake this worker at once (else it finds them by polling)."""
        return self._wakeup is not None and self._wakeup.listening

    # --- the three steps of one round ---------------------------------------------------------

    def claim(self) -> list[Claim]:
        """Lease up to batch_size due rows in one short transaction (attempts + 1, sending)."""
        now = self._clock.now()
        max_attempts = self._settings.delivery_max_attempts
        checked_at = self._abandoned_checked_at
        # Abandoned rows are never re-leased, only marked failed: once a second is soon enough.
        check = checked_at is None or not checked_at <= now < checked_at + ABANDONED_CHECK
        with transaction(self._factory) as session:
            abandoned = check and repo.fail_abandoned(session, now=now, max_attempts=max_attempts)
            claims = repo.claim_due(
                session,
                now=now,
                lease_until=now + timedelta(seconds=self.lease_s),
                limit=self.batch_size,
                max_attempts=max_attempts,
            )
        if check:
            self._abandoned_checked_at = now
        if abandoned:
            log.warning("%d deliveries abandoned on their last attempt marked failed", abandoned)
        return claims

    def send_all(self, claims: Sequence[Claim]) -> list[Outcome]:
        """Send leased rows outside any transaction, ``concurrency`` at a time; never raises.

        Each encrypted contact is decrypted once while it is in the worker's memo.
        """
        jobs = [(claim, self._contact(claim.contact_ciphertext)) for claim in claims]
        if not jobs:
            return []
        with self._loop_lock:
            if self._loop is None:
                self._loop = _new_loop()
                # E-mail (smtplib) and name checks block: threads for them, one SMTP connection
                # each, so the relay never sees more than BLOCKING_THREADS from one worker.
                self._loop.set_default_executor(
                    ThreadPoolExecutor(
                        min(self.concurrency, BLOCKING_THREADS),
                        thread_name_prefix=f"{self._name}-send",
                    )
                )
            return self._loop.run_until_complete(self._send_jobs(jobs))

    async def _send_jobs(
        self, jobs: list[tuple[Claim, dict[str, Any] | ContactUnreadable]]
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(jobs)
        queue = iter(enumerate(jobs))

        # `concurrency` senders taking the next job as they finish one: no task per delivery.
        async def sender() -> None:
            for n, (claim, contact) in queue:
                outcomes[n] = await self._attempt(claim, contact)

        senders = min(self.concurrency, len(jobs))
        try:
            if senders == 1:
                await sender()
            else:
                await asyncio.gather(*(sender() for _ in range(senders)))
        finally:
            # E-mail connections live for one batch: no idle SMTP sessions between rounds.
            await self._email.end_batch()
        return [outcome for outcome in outcomes if outcome is not None]

    def _contact(self, ciphertext: bytes | None) -> dict[str, Any] | ContactUnreadable:
        # Keyed by the ciphertext, not the member: a changed contact is a new key. Fernet and
        # JSON per row were a sixth of a delivery's CPU, and members get many messages.
        contact = self._contacts.get(ciphertext)
        if contact is None:
            try:
                contact = self._cipher.decrypt(ciphertext)
            except ContactUnreadable as exc:
                contact = exc
            if len(self._contacts) >= CONTACT_MEMO_SIZE:
                self._contacts.clear()
            self._contacts[ciphertext] = contact
        return contact

    def send(self, claim: Claim) -> Outcome:
        """Send one leased row outside any transaction; never raises."""
        [outcome] = self.send_all([claim])
        return outcome

    def record(self, claims: Sequence[Claim], outcomes: Sequence[Outcome]) -> int:
        """Store the outcomes in one statement; rows re-leased meanwhile are left alone."""
        finished = [
            repo.Finished(
                id=claim.id,
                attempt=claim.attempt,
                state=outcome.state,
                next_attempt_at=outcome.next_attempt_at,
                last_error=outcome.error,
                sent_at=outcome.at if outcome.state == "sent" else None,
            )
            for claim, outcome in zip(claims, outcomes, strict=True)
        ]
        with transaction(self._factory) as session:
            changed = repo.finish_attempts(session, finished)
        count_deliveries((c.channel, o.state) for c, o in zip(claims, outcomes, strict=True))
        return changed

    async def _attempt(self, claim: Claim, contact: dict[str, Any] | ContactUnreadable) -> Outcome:
        now = self._clock.now()
        if isinstance(contact, ContactUnreadable):
            return self._failed(claim, now, str(contact))
        message = Message(
            delivery_id=claim.delivery_id,
            alert_id=claim.alert_id,
            member_id=claim.member_id,
            kind=claim.message_kind,
            payload=claim.payload,
            attempt=claim.attempt,
        )
        try:
            await self._channels[claim.channel].send(message, contact, now=now)
        except DeliveryError as exc:
            if not exc.retryable:
                return self._failed(claim, now, str(exc), cause=str(exc))
            return self._retry(claim, now, str(exc), retry_after_s=exc.retry_after_s)
        except Exception as exc:  # a bug in a channel must not stop the worker
            log.exception("delivery %s: unexpected error", claim.delivery_id)
            return self._retry(claim, now, f"unexpected error ({type(exc).__name__})")
        done = self._clock.now()
        # DEBUG: one line per message was ~6 % of `ern serve`'s CPU; failures stay WARNING.
        log.debug("delivery %s sent (attempt %d)", claim.delivery_id, claim.attempt)
        return Outcome("sent", done, done)

    def _failed(
        self, claim: Claim, now: datetime, error: str, *, cause: str | None = None
    ) -> Outcome:
        error = scrub(error)
        log.debug("delivery %s failed (attempt %d): %s", claim.delivery_id, claim.attempt, error)
        self.failure_log.failed(claim.channel, claim.delivery_id, scrub(cause or error), final=True)
        return Outcome("failed", now, now, error)

    def _retry(
        self, claim: Claim, now: datetime, error: str, *, retry_after_s: float | None = None
    ) -> Outcome:
        error = scrub(error)
        if claim.attempt >= self._settings.delivery_max_attempts:
            gave_up = f"{error}; gave up after {claim.attempt} attempts"
            return self._failed(claim, now, gave_up, cause=error)
        delay_s = backoff_s(
            claim.attempt, self._settings, retry_after_s=retry_after_s, rng=self._rng
        )
        log.debug(
            "delivery %s: attempt %d failed, retry in %.1f s: %s",
            claim.delivery_id,
            claim.attempt,
            delay_s,
            error,
        )
        self.failure_log.failed(claim.channel, claim.delivery_id, error, final=False)
        return Outcome("pending", now, now + timedelta(seconds=delay_s), error)

    # --- loop ---------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim, send and record one batch; the number of deliveries attempted."""
        leased_until = time.monotonic() + self.lease_s
        self.failure_log.flush()
        claims = self.claim()
        if not claims:
            return 0
        outcomes = self.send_all(claims)
        self._record_with_retries(claims, outcomes, until=leased_until)
        return len(claims)

    def _record_with_retries(
        self, claims: Sequence[Claim], outcomes: Sequence[Outcome], *, until: float | None = None
    ) -> None:
        """Record; while the database is away, retry until the leases run out (``until``)."""
        # Sent but not recorded means sent again once the lease runs out: a database restart
        # (seconds) must not double a whole batch, so retry for as long as the leases hold.
        until = time.monotonic() + self.lease_s if until is None else until
        attempt = 0
        while True:
            try:
                self.record(claims, outcomes)
                if attempt:
                    log.info("recorded %d outcomes after %d failed tries", len(claims), attempt)
                return
            except Exception as exc:
                if not database_away(exc):  # psycopg's own errors too (driver statements)
                    raise
                attempt += 1
                delay_s = min(RECORD_RETRY_CAP_S, 0.2 * 2 ** (attempt - 1))
                if time.monotonic() + delay_s >= until:
                    break
                log.warning("recording %d outcomes failed (try %d)", len(claims), attempt)
                if self._stop.wait(delay_s):
                    break
        log.error("outcomes of %d deliveries not recorded; their leases will expire", len(claims))

    def run_forever(self) -> None:
        """Drain until stop(); idle, wait for a wake-up or the poll interval; errors are logged."""
        if self._wakeup is not None:
            self._wakeup.connect()  # listen before the first claim, so no enqueue is missed
        while not self._stop.is_set():
            try:
                attempted = self.run_once()
            except Exception as exc:
                if database_away(exc):  # a restart or failover: expected, no traceback
                    log.warning("outbox worker: database unavailable (%s)", type(exc).__name__)
                else:
                    log.exception("outbox worker iteration failed")
                attempted = 0
            if attempted < self.batch_size:
                self._idle()

    def _idle(self) -> None:
        poll_s = self._settings.worker_poll_s
        if self._wakeup is not None:
            # Short slices, so that stop() is noticed within half a second whatever the poll.
            deadline = time.monotonic() + poll_s
            while not self._stop.is_set() and (left_s := deadline - time.monotonic()) > 0:
                if self._wakeup.wait(min(left_s, STOP_CHECK_S)):
                    return
                if not self._wakeup.listening:
                    break
            else:
                return
        # No LISTEN connection: pause anyway, so a broken database is not hammered.
        self._stop.wait(poll_s)

    def request_stop(self) -> None:
        """Ask the loop to end after the current batch (safe from a signal handler)."""
        self._stop.set()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float | None = None) -> None:
        """Stop the loop (sends in flight finish within their timeouts) and release resources."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.lease_s)
            self._thread = None
        self.close()

    def close(self) -> None:
        """Release the HTTP connections, the event loop, its threads and the LISTEN connection."""
        if self._wakeup is not None:
            self._wakeup.close()
        with self._loop_lock:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            # In a thread of its own: the caller may be running an event loop (the service's
            # lifespan stops the worker), and a thread cannot run two loops at once.
            closer = threading.Thread(
                target=self._close_loop, args=(loop,), name=f"{self._name}-close"
            )
            closer.start()
            closer.join()

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._poster.aclose())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    def __enter__(self) -> OutboxWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
