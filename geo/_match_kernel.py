"""Numba kernel for map matching: bounded point-to-point Dijkstra between consecutive vertices."""

from __future__ import annotations

import numpy as np
from numba import njit

from geo._kernels import _pop, _push


@njit(cache=True, nogil=True)
def paths_kernel(  # type: ignore[no-untyped-def]
    indptr, indices, w, src, dst, limit_s, dist, pred, touched, hk, hv, out
):
    """Shortest paths ``src[i] -> dst[i]``, each search stopping at ``dst[i]`` or ``limit_s``.

    Writes the nodes of each path after its first node into ``out``; returns
    ``(path_end, n_out)`` where ``out[path_end[i-1]:path_end[i]]`` is pair i's path
    (``path_end[i] = -1`` when ``dst[i]`` was not reached), or ``n_out = -1`` when ``out`` is
    too small. ``dist`` must be inf and ``pred`` -1 on entry; both are restored on exit.
    """
    m = src.shape[0]
    path_end = np.empty(m, dtype=np.int64)
    n_out = 0
    prev_end = 0
    for i in range(m):
        s = src[i]
        t = dst[i]
        if s == t:
            path_end[i] = prev_end
            continue
        nt = 0
        size = 0
        dist[s] = 0.0
        touched[nt] = s
        nt += 1
        size = _push(hk, hv, size, 0.0, s)
        found = False
        while size > 0:
            d = hk[0]
            u = hv[0]
            size = _pop(hk, hv, size)
            if d > dist[u]:
                continue
            if u == t:
                found = True
                break
            for e in range(indptr[u], indptr[u + 1]):
                v = indices[e]
                nd = d + w[e]
                if nd < dist[v] and nd <= limit_s[i]:
                    if dist[v] == np.inf:
                        if nt >= touched.shape[0]:
                            continue
                        touched[nt] = v
                        nt += 1
                    dist[v] = nd
                    pred[v] = u
                    if size < hk.shape[0]:
                        size = _push(hk, hv, size, nd, v)
        if found:
            k = 0
            v = t
            while v != s:
                k += 1
                v = pred[v]
            if n_out + k > out.shape[0]:
                for j in range(nt):
                    dist[touched[j]] = np.inf
                    pred[touched[j]] = -1
                return path_end, -1
            v = t
            for j in range(k):
                out[n_out + k - 1 - j] = v
                v = pred[v]
            n_out += k
            path_end[i] = n_out
            prev_end = n_out
        else:
            path_end[i] = -1
        for j in range(nt):
            dist[touched[j]] = np.inf
            pred[touched[j]] = -1
    return path_end, n_out
