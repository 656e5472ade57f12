"""Layer 10: searching cut parameters — ``optimize()`` (`optimizing`) and its options
(`settings`), the Optuna study (`studies`), the objectives, trials and check of one run
(`objectives`, `searching`, `checking`), the trials and Pareto front (`trials`), and gradient
refinement of the plain cut (`refining`).
"""
