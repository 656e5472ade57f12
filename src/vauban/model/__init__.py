"""Layer 2: where a model comes from — loading (HF dirs, hub ids, GGUF, MLX), the embedded demo
model, and `arch`, the only place that knows model families and which modules write into the
residual stream.
"""
