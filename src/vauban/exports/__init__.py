"""Layer 8: writing the edited model — the export driver, one module per output format
(`formats/`), streaming a cut through checkpoints on disk, and verifying what was written.
"""
