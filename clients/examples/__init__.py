"""Runnable examples of the client helpers (each takes --base-url)."""
