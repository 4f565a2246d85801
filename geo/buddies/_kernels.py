"""Numba kernel for the partition: small groups merged into the group they link to most."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _best_target(  # type: ignore[no-untyped-def]
    indptr, indices, data, label, size, g, first, nxt, one, room_for, max_size, acc, seen, touched
):
    """The group (not ``g``) with room for ``room_for`` more that ``first``'s chain links to most.

    Walks the members ``first, nxt[first], ...`` (only ``first`` when ``one``), sums their
    link weights per other group and returns the strongest with ``size + room_for <=
    max_size`` (ties: the lower group id), or -1.
    """
    nt = 0
    m = first
    while m >= 0:
        for e in range(indptr[m], indptr[m + 1]):
            h = label[indices[e]]
            if h < 0 or h == g:
                continue
            if not seen[h]:
                seen[h] = True
                acc[h] = 0.0
                touched[nt] = h
                nt += 1
            acc[h] += data[e]
        m = -1 if one else nxt[m]
    best = -1
    best_score = -1.0
    for t in range(nt):
        h = touched[t]
        seen[h] = False
        if size[h] + room_for <= max_size:
            score = acc[h]
            if score > best_score or (score == best_score and h < best):
                best = h
                best_score = score
    return best


@njit(cache=True, nogil=True)
def merge_small_kernel(indptr, indices, data, label, n_groups, max_size, min_size, passes):  # type: ignore[no-untyped-def]
    """Groups below ``min_size`` join, whole, the group they link to most that has room.

    ``label`` (group per member, -1 for none) is updated in place. Up to ``passes``
    rounds, smallest groups first (a merge can make a new best target); then the members
    of groups still too small join their own best groups one by one, where there is room.
    ``indptr, indices, data`` is the symmetric member x member weight in CSR form.
    """
    n = label.shape[0]
    size = np.zeros(n_groups, dtype=np.int64)
    head = np.full(n_groups, -1, dtype=np.int64)
    tail = np.full(n_groups, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    for m in range(n):
        g = label[m]
        if g < 0:
            continue
        if head[g] < 0:
            head[g] = m
        else:
            nxt[tail[g]] = m
        tail[g] = m
        size[g] += 1
    acc = np.zeros(n_groups)
    seen = np.zeros(n_groups, dtype=np.bool_)
    touched = np.empty(n_groups, dtype=np.int64)
    for _ in range(passes):
        changed = False
        count = 0
        for g in range(n_groups):
            if 0 < size[g] < min_size:
                count += 1
        small = np.empty(count, dtype=np.int64)
        key = np.empty(count, dtype=np.int64)
        count = 0
        for g in range(n_groups):
            if 0 < size[g] < min_size:
                small[count] = g
                key[count] = size[g] * n_groups + g
                count += 1
        for i in np.argsort(key):
            g = small[i]
            s = size[g]
            if s == 0 or s >= min_size:
                continue
            best = _best_target(
                indptr, indices, data, label, size, g, head[g], nxt, False, s, max_size,
                acc, seen, touched,
            )  # fmt: skip
            if best < 0:
                continue
            m = head[g]
            while m >= 0:
                label[m] = best
                m = nxt[m]
            nxt[tail[best]] = head[g]
            tail[best] = tail[g]
            size[best] += s
            head[g] = -1
            tail[g] = -1
            size[g] = 0
            changed = True
        if not changed:
            break
    # a small group that fits nowhere whole: its members join their best groups one by one
    for g in range(n_groups):
        if size[g] == 0 or size[g] >= min_size:
            continue
        m = head[g]
        new_head = -1
        new_tail = -1
        while m >= 0:
            after = nxt[m]
            best = _best_target(
                indptr, indices, data, label, size, g, m, nxt, True, 1, max_size,
                acc, seen, touched,
            )  # fmt: skip
            nxt[m] = -1
            if best >= 0:
                label[m] = best
                nxt[tail[best]] = m
                tail[best] = m
                size[best] += 1
                size[g] -= 1
            else:
                if new_head < 0:
                    new_head = m
                else:
                    nxt[new_tail] = m
                new_tail = m
            m = after
        head[g] = new_head
        tail[g] = new_tail
    return label


@njit(cache=True, nogil=True)
def refine_kernel(indptr, indices, data, label, fixed, n_groups, max_size, min_size, sweeps):  # type: ignore[no-untyped-def]
    """Local moves: a member goes to the group it links to more than its own, where it fits.

    A member moves when its links to another group with room outweigh those to its own
    group and its own group keeps ``min_size``; members in ``fixed`` (kept groups) and
    unplaced ones (-1) stay. Each move raises the total weight inside groups, so sweeps
    (at most ``sweeps``) stop when none is left. ``label`` is updated in place.
    """
    n = label.shape[0]
    size = np.zeros(n_groups, dtype=np.int64)
    for m in range(n):
        if label[m] >= 0:
            size[label[m]] += 1
    acc = np.zeros(n_groups)
    seen = np.zeros(n_groups, dtype=np.bool_)
    touched = np.empty(n_groups, dtype=np.int64)
    for _ in range(sweeps):
        moved = 0
        for m in range(n):
            g = label[m]
            if g < 0 or fixed[m] or size[g] <= min_size:
                continue
            nt = 0
            for e in range(indptr[m], indptr[m + 1]):
                h = label[indices[e]]
                if h < 0:
                    continue
                if not seen[h]:
                    seen[h] = True
                    acc[h] = 0.0
                    touched[nt] = h
                    nt += 1
                acc[h] += data[e]
            own = acc[g] if seen[g] else 0.0
            best = -1
            best_score = own
            for t in range(nt):
                h = touched[t]
                seen[h] = False
                if h != g and size[h] < max_size:
                    score = acc[h]
                    if score > best_score * (1.0 + 1e-9) + 1e-12 or (
                        best >= 0 and score == best_score and h < best
                    ):
                        best = h
                        best_score = score
            if best >= 0:
                label[m] = best
                size[g] -= 1
                size[best] += 1
                moved += 1
        if moved == 0:
            break
    return label
