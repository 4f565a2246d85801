"""The outbox worker: lease due rows (FOR UPDATE SKIP LOCKED), send outside, record."""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Literal

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from api.clock import Clock, SystemClock
from api.database import transaction
from api.members.crypto import contact_cipher
from api.members.errors import ContactUnreadable
from api.notify import repository as repo
from api.notify.channels import Channel, Message, make_channels, scrub
from api.notify.errors import DeliveryError
from api.notify.service import backoff_s
from api.settings import Settings

log = logging.getLogger("ern.notify")

Claim = repo.Claimed
STOP_CHECK_S = 0.5


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
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        clock: Clock | None = None,
        batch_size: int = 10,
        lease_s: float | None = None,
        rng: random.Random | None = None,
        name: str = "ern-outbox",
        listen: bool = True,
    ) -> None:
        self._factory = session_factory
        self._settings = settings
        self._clock = clock or SystemClock()
        self.batch_size = batch_size
        # Long enough for the slowest attempt (SMTP has several timed round trips).
        self.lease_s = (
            lease_s if lease_s is not None else max(30.0, 6 * settings.delivery_timeout_s)
        )
        self._rng = rng or random.Random()
        self._name = name
        self._cipher = contact_cipher(settings)
        self._client = httpx.Client(
            timeout=settings.delivery_timeout_s, follow_redirects=False, trust_env=False
        )
        self._channels: dict[str, Channel] = make_channels(settings, self._client)
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # LISTEN needs a real engine; sessions bound to one test connection just poll.
        bind = session_factory.kw.get("bind")
        self._wakeup = repo.Wakeup(bind) if listen and isinstance(bind, Engine) else None

    @property
    def listening(self) -> bool:
        """Whether enqueues wake this worker at once (else it finds them by polling)."""
        return self._wakeup is not None and self._wakeup.listening

    # --- the three steps of one attempt -------------------------------------------------------

    def claim(self) -> list[Claim]:
        """Lease up to batch_size due rows in one short transaction (attempts + 1, sending)."""
        now = self._clock.now()
        max_attempts = self._settings.delivery_max_attempts
        with transaction(self._factory) as session:
            if repo.fail_abandoned(session, now=now, max_attempts=max_attempts):
                log.warning("deliveries abandoned on their last attempt marked failed")
            return repo.claim_due(
                session,
                now=now,
                lease_until=now + timedelta(seconds=self.lease_s),
                limit=self.batch_size,
                max_attempts=max_attempts,
            )

    def send(self, claim: Claim) -> Outcome:
        """Send one leased row outside any transaction; never raises."""
        now = self._clock.now()
        message = Message(
            delivery_id=claim.delivery_id,
            alert_id=claim.alert_id,
            member_id=claim.member_id,
            kind=claim.message_kind,
            payload=claim.payload,
            attempt=claim.attempt,
        )
        try:
            contact = self._cipher.decrypt(claim.contact_ciphertext)
            channel = self._channels[claim.channel]
            channel.send(message, contact, now=now)
        except ContactUnreadable as exc:
            return self._failed(now, str(exc))
        except DeliveryError as exc:
            if not exc.retryable:
                return self._failed(now, str(exc))
            return self._retry(claim, now, str(exc), retry_after_s=exc.retry_after_s)
        except Exception as exc:  # a bug in a channel must not stop the worker
            log.exception("delivery %s: unexpected error", claim.delivery_id)
            return self._retry(claim, now, f"unexpected error ({type(exc).__name__})")
        done = self._clock.now()
        log.info("delivery %s sent (attempt %d)", claim.delivery_id, claim.attempt)
        return Outcome("sent", done, done)

    def record(self, claims: list[Claim], outcomes: list[Outcome]) -> int:
        """Store the outcomes in one transaction; rows re-leased meanwhile are left alone."""
        with transaction(self._factory) as session:
            changed = 0
            for claim, outcome in zip(claims, outcomes, strict=True):
                changed += repo.finish_attempt(
                    session,
                    row_id=claim.id,
                    attempt=claim.attempt,
                    state=outcome.state,
                    next_attempt_at=outcome.next_attempt_at,
                    last_error=outcome.error,
                    sent_at=outcome.at if outcome.state == "sent" else None,
                )
            return changed

    def _failed(self, now: datetime, error: str) -> Outcome:
        return Outcome("failed", now, now, scrub(error))

    def _retry(
        self, claim: Claim, now: datetime, error: str, *, retry_after_s: float | None = None
    ) -> Outcome:
        error = scrub(error)
        if claim.attempt >= self._settings.delivery_max_attempts:
            return Outcome("failed", now, now, f"{error}; gave up after {claim.attempt} attempts")
        delay_s = backoff_s(
            claim.attempt, self._settings, retry_after_s=retry_after_s, rng=self._rng
        )
        return Outcome("pending", now, now + timedelta(seconds=delay_s), error)

    # --- loop ---------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim, send and record one batch; the number of deliveries attempted."""
        claims = self.claim()
        if not claims:
            return 0
        if len(claims) == 1:
            outcomes = [self.send(claims[0])]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.batch_size, thread_name_prefix=f"{self._name}-send"
                )
            outcomes = list(self._pool.map(self.send, claims))
        self._record_with_retries(claims, outcomes)
        return len(claims)

    def _record_with_retries(self, claims: list[Claim], outcomes: list[Outcome]) -> None:
        # Sent but not recorded means sent again after the lease: worth a few quick retries.
        for attempt in range(3):
            try:
                self.record(claims, outcomes)
                return
            except OperationalError:
                log.warning("recording %d outcomes failed (try %d)", len(claims), attempt + 1)
                if self._stop.wait(0.2 * (attempt + 1)):
                    break
        log.error("outcomes of %d deliveries not recorded; their leases will expire", len(claims))

    def run_forever(self) -> None:
        """Drain until stop(); idle, wait for a wake-up or the poll interval; errors are logged."""
        if self._wakeup is not None:
            self._wakeup.connect()  # listen before the first claim, so no enqueue is missed
        while not self._stop.is_set():
            try:
                attempted = self.run_once()
            except Exception:
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
        """Release the HTTP client, the send threads and the LISTEN connection."""
        if self._wakeup is not None:
            self._wakeup.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._client.close()

    def __enter__(self) -> OutboxWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
