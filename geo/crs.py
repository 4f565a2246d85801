"""The one place that picks a metric CRS for metre-based work (areas, lengths, snapping)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pyproj
import shapely
from numpy.typing import ArrayLike, NDArray

WGS84 = pyproj.CRS.from_epsg(4326)


def metric_crs(lon: float, lat: float) -> pyproj.CRS:
    """UTM zone of a point, the metric CRS used for its neighbourhood.

    Parameters
    ----------
    lon, lat
        WGS84 degrees.

    Returns
    -------
    The WGS84 / UTM CRS whose zone contains the point.
    """
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    epsg = (32600 if lat >= 0 else 32700) + zone
    return _crs(epsg)


@lru_cache(maxsize=128)
def _crs(epsg: int) -> pyproj.CRS:
    return pyproj.CRS.from_epsg(epsg)


@lru_cache(maxsize=128)
def _transformer(epsg: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(WGS84, _crs(epsg), always_xy=True)


def transformer(crs: pyproj.CRS) -> pyproj.Transformer:
    """The lon/lat -> ``crs`` transformer, shared; hold on to it on hot paths.

    Parameters
    ----------
    crs
        A metric CRS with an EPSG code, usually from :func:`metric_crs`.

    Returns
    -------
    An always-xy transformer from WGS84.
    """
    # CRS.to_epsg() costs tens of microseconds: callers on a hot path keep the result.
    epsg = crs.to_epsg()
    if epsg is None:
        msg = f"CRS {crs.name!r} has no EPSG code"
        raise ValueError(msg)
    return _transformer(epsg)


def lonlat_to_xy(
    lon: ArrayLike, lat: ArrayLike, crs: pyproj.CRS | pyproj.Transformer
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Project lon/lat arrays to metres in ``crs``.

    Parameters
    ----------
    lon, lat
        WGS84 degrees, any array shape (broadcast together).
    crs
        A metric CRS, usually from :func:`metric_crs`, or its :func:`transformer`.

    Returns
    -------
    x, y in metres, float64 arrays.
    """
    to_xy = crs if isinstance(crs, pyproj.Transformer) else transformer(crs)
    x, y = to_xy.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def to_metric(geom: Any, crs: pyproj.CRS | None = None) -> Any:
    """Reproject a lon/lat Shapely geometry to metres.

    Parameters
    ----------
    geom
        A Shapely geometry in WGS84 lon/lat.
    crs
        Target metric CRS; default: the UTM zone of the geometry's centroid.

    Returns
    -------
    The same geometry type with coordinates in metres.
    """
    if crs is None:
        c = geom.centroid
        crs = metric_crs(c.x, c.y)

    def _project(coords: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = lonlat_to_xy(coords[:, 0], coords[:, 1], crs)
        return np.column_stack([x, y])

    return shapely.transform(geom, _project)
