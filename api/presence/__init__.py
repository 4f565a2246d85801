"""Presence: where members are at a time (live locations, routes, zones, home) and alert ranking."""
