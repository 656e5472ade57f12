"""Layer 1, the floor: the one error type and argument checks, optional extras, atomic writes, text
files, progress switches. Imports nothing else of vauban.
"""
