"""Layer 9: measuring what changed — refusals (through `vauban.judge`), KL, perplexity, over-
refusal, capability, and alpha sweeps.
"""
