"""Layer 7: ways to act on a measured direction — cut specifications (per-layer, kernels,
subspaces, reproduced trials), run-time steering, and the edit methods: one protocol
(:mod:`.protocol`: model, prompt sets, direction → an exact, reversible edit), one module per
method, found by name (:mod:`.registry`), and the default's rule (:mod:`.default`,
:mod:`.choosing`). See ``docs/methods.md``.
"""

# the edit methods fitted on prompt sets that `abliterate(method=NAME)` and `vauban abliterate
# --method NAME` apply by name (torch-free here, so that the command line parses without it)
FITTED = ("harmless_preserving", "learned", "learned_preserving")
