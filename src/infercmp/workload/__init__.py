"""What is measured: a model's config and plugin, its shapes and inputs, loading its module,
batching, and the offered load.
"""
