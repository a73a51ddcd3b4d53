"""The search over an engine's declared options and precisions, by successive halving."""
