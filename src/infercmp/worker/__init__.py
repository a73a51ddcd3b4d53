"""The measuring process: `python -m infercmp.worker SPEC.json` runs one combination and prints its
result.
"""
