"""Errors raised by the geo engine; the API maps each class to one status code."""


class GeoError(ValueError):
    """Base class of every error the geo engine raises for bad input or missing data."""


class OutsideServiceArea(GeoError):
    """A point is farther from the street network than the snap limit."""


class InvalidGeometry(GeoError):
    """A geometry is malformed, out of range, too small, too large or too complex."""


class GraphUnavailable(GeoError):
    """No compiled graph is loaded for the requested travel mode."""


class GraphCacheMismatch(GeoError):
    """A compiled graph does not match its manifest or its source extract."""


class SourceUnavailable(GeoError):
    """An OSM source cannot be read: a missing file, an unknown format, or no network."""
