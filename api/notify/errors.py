"""Errors of the notify domain: delivery outcomes the worker acts on."""

from __future__ import annotations


class DeliveryError(Exception):
    """A send failed; ``retry_after_s`` is the receiver's Retry-After, if it gave one."""

    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransientDeliveryError(DeliveryError):
    """Worth retrying: a timeout, a refused connection, a 5xx, a 408 or a 429."""


class PermanentDeliveryError(DeliveryError):
    """Not worth retrying: a 4xx, a rejected recipient, an unconfigured channel, no destination."""

    retryable = False
