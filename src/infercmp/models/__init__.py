"""Tiny built-in models: registered through entry points like any plugin; used by tests and demos."""
