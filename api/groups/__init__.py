"""Buddy groups: proposals from route overlap, published groups, rosters, group texts."""
