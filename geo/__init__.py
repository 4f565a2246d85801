"""ern's pure geospatial engine: street graphs, snapping, bounded travel-time search."""

__version__ = "0.1.0"
