"""Layer 2: what goes into a model — prompt sets and their sources, chat formatting (system
prompts, template options) and reasoning (thinking budgets, splitting thoughts from replies).
"""
