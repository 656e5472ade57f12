"""Layer 3: running a model — batching, residual capture, generation (vauban's loop and the fast
decoder), and the scores every higher layer shares (KL divergence, the refusal likelihood).
"""
