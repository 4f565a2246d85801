"""Snap lon/lat points to their nearest graph nodes with one KD-tree in a metric CRS."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from geo.crs import lonlat_to_xy, metric_crs, transformer
from geo.errors import InvalidGeometry, OutsideServiceArea
from geo.graph import StreetGraph


class Snapper:
    """Nearest-node search: a cKDTree over the graph's nodes projected to their UTM zone.

    The tree is built once, at construction; every query is one vectorised call.

    Parameters
    ----------
    graph
        Compiled graph whose nodes are the snap targets.
    """

    def __init__(self, graph: StreetGraph) -> None:
        self.graph = graph
        west, south, east, north = graph.bbox
        self.crs = metric_crs((west + east) / 2, (south + north) / 2)
        self._to_xy = transformer(self.crs)
        x, y = lonlat_to_xy(graph.lon, graph.lat, self._to_xy)
        self._tree = cKDTree(np.column_stack([x, y]))

    def snap(
        self, lon: ArrayLike, lat: ArrayLike, *, max_snap_m: float | None = None
    ) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
        """Nearest node of each point, by Euclidean distance in the metric CRS.

        Parameters
        ----------
        lon, lat
            WGS84 degrees, scalars or arrays of one shape (flattened).
        max_snap_m
            Largest allowed snap distance; None for no limit.

        Returns
        -------
        nodes
            int32 node per point.
        distance_m
            float64 snap distance per point, in metres.

        Raises
        ------
        InvalidGeometry
            A coordinate is not finite or out of the lon/lat range.
        OutsideServiceArea
            A point is farther than ``max_snap_m`` from every node.
        """
        lon_a = np.atleast_1d(np.asarray(lon, dtype=np.float64)).ravel()
        lat_a = np.atleast_1d(np.asarray(lat, dtype=np.float64)).ravel()
        if lon_a.shape != lat_a.shape:
            msg = f"lon and lat shapes differ: {lon_a.shape} != {lat_a.shape}"
            raise InvalidGeometry(msg)
        bad = (
            ~(np.isfinite(lon_a) & np.isfinite(lat_a))
            | (np.abs(lon_a) > 180)
            | (np.abs(lat_a) > 90)
        )
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            msg = (
                f"invalid coordinate ({lon_a[i]}, {lat_a[i]}): "
                "need finite lon in [-180, 180], lat in [-90, 90]"
            )
            raise InvalidGeometry(msg)
        if lon_a.size == 0:
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float64)
        x, y = lonlat_to_xy(lon_a, lat_a, self._to_xy)
        distance, node = self._tree.query(np.column_stack([x, y]), k=1)
        distance = np.asarray(distance, dtype=np.float64)
        if max_snap_m is not None:
            far = distance > max_snap_m
            if far.any():
                i = int(np.argmax(distance))
                msg = (
                    f"{int(far.sum())} point(s) farther than {max_snap_m:g} m from the "
                    f"{self.graph.mode} street network, e.g. ({lon_a[i]:.6f}, {lat_a[i]:.6f}) "
                    f"at {distance[i]:.0f} m: "
                    "outside the service area"
                )
                raise OutsideServiceArea(msg)
        return np.asarray(node, dtype=np.int32), distance
