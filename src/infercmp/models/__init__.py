"""Tiny built-in models, registered through entry points like any plugin; for tests and demos."""
