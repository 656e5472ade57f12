"""Layer 10: searching cut parameters — the Optuna study (`optimizing`), its trials and Pareto
front, and gradient refinement of the pick.
"""
