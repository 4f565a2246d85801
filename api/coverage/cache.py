"""The per-process cache of coverage answers, keyed by parameters and the presence token."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from api.settings import Settings

CACHE_SIZE = 64
T = TypeVar("T")

_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def cache_get(key: tuple[Any, ...]) -> Any:
    """The cached value of ``key`` (now the most recent), or None."""
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
        return found


def cache_put(key: tuple[Any, ...], value: Any) -> None:
    """Keep ``value``; the least recently used entries beyond CACHE_SIZE go."""
    with _CACHE_LOCK:
        _CACHE[key] = value
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)


def cached(key: tuple[Any, ...], token: Any, compute: Callable[[], T]) -> tuple[T, bool]:
    """The cached value of ``key``, else ``compute()`` kept under it; True when it was cached.

    ``token`` is the presence token the key holds: None (presence unknown) caches nothing.
    """
    found = cache_get(key) if token is not None else None
    if found is not None:
        return found, True
    value = compute()
    if token is not None:
        cache_put(key, value)
    return value, False


def clear_cache() -> None:
    """Forget every cached coverage answer of this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def settings_key(settings: Settings) -> tuple[Any, ...]:
    """The settings an answer depends on (part of every cache key)."""
    return (
        settings.acceptance_rate,
        settings.coverage_target,
        settings.mobilization_s,
        settings.timezone,
        settings.max_snap_m,
    )
