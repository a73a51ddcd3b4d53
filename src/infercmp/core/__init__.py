"""The words every process shares: errors, atomic files, entry points, parity, statistics and the
worker contract.
"""
