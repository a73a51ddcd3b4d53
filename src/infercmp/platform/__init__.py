"""Facts about the host: GPUs and their visibility, CUDA helpers, CPU placement, the environment
record and the lifeline.
"""
