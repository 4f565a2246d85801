"""The in-memory street graph of one travel mode: CSR arrays both ways, and conversions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import networkx as nx

MODES = ("walk", "bike", "drive")

# the arrays of a compiled graph, in the order they are stored
ARRAY_NAMES = (
    "indptr",
    "indices",
    "travel_time_s",
    "rev_indptr",
    "rev_indices",
    "rev_travel_time_s",
    "lon",
    "lat",
    "osm_id",
)


@dataclass(frozen=True, eq=False)
class StreetGraph:
    """A compiled street graph of one travel mode.

    Nodes are numbered ``0..n_nodes-1``. The forward CSR lists, for node ``u``, the edges
    ``u -> indices[indptr[u]:indptr[u+1]]`` with their ``travel_time_s``; the reversed
    CSR lists, for node ``v``, the nodes ``u`` with an edge ``u -> v``. Parallel edges
    were reduced to the fastest one.
    """

    mode: str
    indptr: NDArray[np.int64]
    indices: NDArray[np.int32]
    travel_time_s: NDArray[np.float32]
    rev_indptr: NDArray[np.int64]
    rev_indices: NDArray[np.int32]
    rev_travel_time_s: NDArray[np.float32]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    osm_id: NDArray[np.int64]
    manifest: dict[str, Any]
    # per-graph caches of the query modules (search scratch space); never compared
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Read-only views: the arrays may be a shared memory map, and the search kernels
        # are compiled once for read-only arrays (numba types them apart from writable ones).
        for name in ARRAY_NAMES:
            view = np.asarray(getattr(self, name)).view()
            view.flags.writeable = False
            object.__setattr__(self, name, view)

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(self.lon.shape[0])

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return int(self.indices.shape[0])

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the nodes, in degrees."""
        return (
            float(self.lon.min()),
            float(self.lat.min()),
            float(self.lon.max()),
            float(self.lat.max()),
        )

    @classmethod
    def from_edges(
        cls,
        mode: str,
        u: ArrayLike,
        v: ArrayLike,
        travel_time_s: ArrayLike,
        lon: ArrayLike,
        lat: ArrayLike,
        *,
        osm_id: ArrayLike | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> StreetGraph:
        """A graph from an edge list (hand-built grids, tests), keeping the fastest parallel edge.

        No component is dropped: the caller decides what the graph holds.

        Parameters
        ----------
        mode
            Travel mode label.
        u, v
            Edge end nodes, ``0..n-1`` with ``n = len(lon)``.
        travel_time_s
            Edge weight (>= 0, finite).
        lon, lat
            Node coordinates in degrees.
        osm_id
            Node ids; default ``0..n-1``.
        manifest
            Metadata; default a minimal one.

        Returns
        -------
        The compiled graph.
        """
        lon_a = np.asarray(lon, dtype=np.float64).ravel()
        lat_a = np.asarray(lat, dtype=np.float64).ravel()
        n = len(lon_a)
        u_a = np.asarray(u, dtype=np.int64).ravel()
        v_a = np.asarray(v, dtype=np.int64).ravel()
        w = np.asarray(travel_time_s, dtype=np.float64).ravel()
        if not (len(u_a) == len(v_a) == len(w)) or len(lat_a) != n:
            msg = "u, v, travel_time_s (and lon, lat) must have equal lengths"
            raise ValueError(msg)
        if len(u_a) and (min(u_a.min(), v_a.min()) < 0 or max(u_a.max(), v_a.max()) >= n):
            msg = f"edge end nodes must lie in [0, {n})"
            raise ValueError(msg)
        if not (np.isfinite(w).all() and (w >= 0).all()):
            msg = "travel_time_s must be finite and >= 0"
            raise ValueError(msg)
        u_a, v_a, w32 = _min_parallel(u_a, v_a, w, n)
        indptr, indices, tt = _csr(n, u_a, v_a, w32)
        rev_indptr, rev_indices, rev_tt = _csr(n, v_a, u_a, w32)
        ids = np.arange(n, dtype=np.int64) if osm_id is None else np.asarray(osm_id, np.int64)
        meta = manifest if manifest is not None else {"mode": mode, "source": None}
        return cls(
            mode=mode,
            indptr=indptr,
            indices=indices,
            travel_time_s=tt,
            rev_indptr=rev_indptr,
            rev_indices=rev_indices,
            rev_travel_time_s=rev_tt,
            lon=lon_a,
            lat=lat_a,
            osm_id=ids,
            manifest=meta,
        )

    def to_networkx(self) -> nx.DiGraph:
        """The graph as a NetworkX DiGraph, for tests and baselines.

        Returns
        -------
        Nodes ``0..n-1`` with ``lon``, ``lat``, ``osm_id``; edges with ``travel_time_s``
        (a Python float equal to the compiled float32 weight).
        """
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(range(self.n_nodes))
        u = np.repeat(np.arange(self.n_nodes), np.diff(self.indptr))
        g.add_weighted_edges_from(
            zip(
                u.tolist(),
                self.indices.tolist(),
                self.travel_time_s.astype(np.float64).tolist(),
                strict=True,
            ),
            weight="travel_time_s",
        )
        return g


def _csr(
    n: int, src: NDArray[np.int64], dst: NDArray[np.int64], w: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float32]]:
    order = np.lexsort((dst, src))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order].astype(np.int32), w[order].astype(np.float32)


def _min_parallel(
    u: NDArray[np.int64], v: NDArray[np.int64], w: NDArray[np.float64], n: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Drop self-loops and keep the fastest parallel edge (SciPy's constructors would sum them)."""
    keep = u != v
    u, v, w = u[keep], v[keep], w[keep]
    key = u * n + v
    order = np.lexsort((w, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    sel = order[first]
    return u[sel], v[sel], w[sel].astype(np.float32)
