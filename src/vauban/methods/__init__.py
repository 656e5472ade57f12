"""Layer 7: ways to act on a measured direction — cut specifications (per-layer, kernels,
subspaces, reproduced trials) and run-time steering.
"""
