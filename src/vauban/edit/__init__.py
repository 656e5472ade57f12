"""Layer 5: the exact, reversible weight edit — `cut(model, direction)` orthogonalizes every
residual writer against a direction or subspace and undoes it bit for bit. It takes vectors, not
measurements: anything with `cut_vectors()` (a `DirectionResult`) or a tensor.
"""
