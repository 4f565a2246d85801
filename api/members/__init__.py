"""The members domain."""
