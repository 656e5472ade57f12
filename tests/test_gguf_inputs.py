"""GGUF inputs of the new families whose architecture transformers' GGUF loader reads (LFM2,
MiniMax-M2, Qwen 3.5 and Qwen 3.5 MoE in transformers 5.24; docs/models.md lists the rest): a tiny
model of tests/families.py converted by llama.cpp's own converter (``convert_hf_to_gguf.py``, as
users' GGUF files are made) loads through ``vauban.load`` with every weight it had (F32: the same
values, to float32 rounding where llama.cpp stores ``1 + w``) and the same logits. The converter
comes with the ``[llamacpp]`` extra (:func:`vauban.exports.formats.llamacpp.converter_dir`);
without it the tests skip."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers
from packaging.version import Version

from families import BY_NAME, model_for, tokenizer_for
from vauban.core.errors import VaubanError
from vauban.model import arch
from vauban.model.loading import load_model

IDS = torch.tensor([[5, 9, 17, 33, 40, 2, 77]])
if Version(transformers.__version__) < Version("5.24"):  # pragma: no cover - the lower-bound run
    pytest.skip(
        "GGUF of these families is read from transformers 5.24 on (5.17 with gguf 0.16 reads only "
        "Qwen 3.5's, and gguf 0.16 cannot patch it: docs/models.md)",
        allow_module_level=True,
    )
# family -> llama.cpp's pre-tokenizer name (the tiny vocabulary is none it knows by its hash) and
# converter flags: the tiny Qwen 3.5 has no multi-token-prediction layer (--no-mtp) and states its
# layer pattern as the interval llama.cpp writes (full attention every second layer); MiniMax-M2's
# converter reads `rotary_dim`, which the released config.json has and transformers does not write.
CASES = {
    "LFM2": ("lfm2", ()),
    "MiniMax-M2": ("minimax-m2", ()),
    "Qwen 3.5": ("qwen35", ("--no-mtp",)),
    "Qwen 3.5 MoE": ("qwen35", ("--no-mtp",)),
}
REFUSED = {"GLM-4.5/4.6": ("glm4", ())}  # llama.cpp converts it; transformers does not read it back
# One interpreter converts every case: llama.cpp's converter, told the pre-tokenizer.
_CONVERT = """
import json, sys
folder, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path[:0] = [folder, folder + "/gguf-py"]
import conversion.base as base
import convert_hf_to_gguf as converter
for pre, args in jobs:
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer, pre=pre: pre
    sys.argv = ["convert_hf_to_gguf.py", *args]
    converter.main()
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    import json

    from vauban.exports.formats import llamacpp

    try:
        folder = llamacpp.converter_dir()
    except VaubanError as err:
        pytest.skip(f"llama.cpp's converter is not available: {err}")
    root = tmp_path_factory.mktemp("gguf")
    made, jobs = {}, []
    for name, (pre, flags) in {**CASES, **REFUSED}.items():
        family = BY_NAME[name]
        if name.startswith("Qwen 3.5"):
            family = replace(family, config={**family.config, "full_attention_interval": 2})
        tokenizer = tokenizer_for(family, merges=(("Ġ", "t"),))  # a GGUF vocabulary needs merges
        model = model_for(family, tokenizer)
        hf, out = root / model.config.model_type, root / f"{model.config.model_type}.gguf"
        model.save_pretrained(hf)
        tokenizer.save_pretrained(hf)
        if name == "MiniMax-M2":  # the released config states its rotary width, which the converter reads
            config = json.loads((hf / "config.json").read_text())
            (hf / "config.json").write_text(json.dumps({**config, "rotary_dim": config["head_dim"]}))
        jobs.append((pre, [str(hf), "--outfile", str(out), "--outtype", "f32", *flags]))
        made[name] = (out, model)
    done = subprocess.run(
        [sys.executable, "-c", _CONVERT, str(folder), json.dumps(jobs)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return made


@pytest.mark.parametrize("name", sorted(CASES))
def test_gguf_of_a_new_family_loads_with_its_weights(converted, name: str) -> None:
    path, model = converted[name]
    loaded, tokenizer = load_model(path, device="cpu")
    assert arch.model_type(loaded) == arch.model_type(model)
    theirs = loaded.state_dict()
    for key, value in model.state_dict().items():  # Qwen 3.5's norms are stored as 1 + w: rounding
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=1e-7, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=IDS).logits, model(input_ids=IDS).logits, rtol=1e-5, atol=1e-6
        )
    assert tokenizer.eos_token_id == model.config.eos_token_id


@pytest.mark.parametrize("name", sorted(CASES))
def test_cut_gguf_of_a_new_family_exports_as_a_patched_gguf(converted, name: str, tmp_path) -> None:
    """The cut model loaded from the GGUF exports as a patched copy of that file (edited tensors
    in their own type, here F32): reloaded, it gives the cut model's logits."""
    from vauban import cut, export

    path, _ = converted[name]
    model, tokenizer = load_model(path, device="cpu")
    d = torch.randn(arch.d_model(model), generator=torch.Generator().manual_seed(5))
    with cut(model, d, embeddings=True):
        with torch.no_grad():
            want = model(input_ids=IDS).logits
        out = export(model, tokenizer, tmp_path / "out", format="gguf")
    (gguf_file,) = out.glob("*.gguf")
    reloaded, _ = load_model(gguf_file, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=IDS).logits, want, rtol=1e-5, atol=1e-5)


def test_gguf_transformers_cannot_read_is_a_one_line_error(converted) -> None:
    path, _ = converted["GLM-4.5/4.6"]
    with pytest.raises(
        VaubanError, match=r"could not read GGUF .*not supported.*transformers supports its architecture"
    ):
        load_model(path, device="cpu")
