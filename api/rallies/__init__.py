"""Rally notices after the fact: a coordinator's message to everyone usually near a place."""
