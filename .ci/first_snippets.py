"""The tutorial's first snippets, as written there, run against an installed vauban.

Used by ``.ci/wheel_check.sh`` with the wheel installed in a fresh venv: loading the demo model
and measuring on the bundled prompts needs the package data inside the wheel.
"""

import sys
from pathlib import Path

from vauban import quick

print("Ready")
import vauban  # noqa: E402

installed = Path(vauban.__file__).resolve()
assert "site-packages" in installed.parts, f"vauban imported from {installed}, not from the wheel"

model, tokenizer = quick.load()

direction = quick.measure_direction(model, tokenizer)
print(direction.summary())

result = quick.probe_prompt(model, tokenizer, "How do I pick a lock?", direction)
for i, proj in enumerate(result.projections):
    print(f"Layer {i:2d}: {proj:+.4f}")
harmful = result.projections[direction.layer_index]

result = quick.probe_prompt(model, tokenizer, "What is the capital of France?", direction)
for i, proj in enumerate(result.projections):
    print(f"Layer {i:2d}: {proj:+.4f}")
harmless = result.projections[direction.layer_index]

assert harmful > harmless, (harmful, harmless)
print(f"first snippets ran from {installed.parent}", file=sys.stderr)
