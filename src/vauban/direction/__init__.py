"""Layer 6: finding the refusal direction — measuring every layer's candidate, choosing one by the
effect of cutting it, probing prompts along it; `DirectionResult` and its file format.
"""
