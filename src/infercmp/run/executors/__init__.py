"""Where workers run: local subprocesses, or Ray tasks on a cluster."""
