"""Vision-language families (tests/families.py VISION_FAMILIES): the language model is cut, and a
tiny image still goes through the family's image processor and the model, with the same logits
after export as before it. The processors' PIL backends run without torchvision; the prompt's
image tokens are laid out as the family's processor would (one per merged patch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig

from families import VISION_FAMILIES, Family, model_for, tokenizer_for
from vauban import cut, export
from vauban.model import arch
from vauban.model.loading import load_model, model_class

ids = pytest.mark.parametrize("family", VISION_FAMILIES, ids=[f.name for f in VISION_FAMILIES])


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8))


def image_inputs(family: Family, tokenizer, image: Image.Image) -> dict[str, torch.Tensor]:
    """``input_ids`` with the image's tokens between text, and the processor's pixel tensors."""
    image_id = tokenizer.convert_tokens_to_ids(family.extra["image_token"])
    if family.model_type == "mistral3":
        from transformers import PixtralImageProcessorPil

        processor = PixtralImageProcessorPil(patch_size=14, size={"longest_edge": 56})
        pixels = processor(image, return_tensors="pt")
        h, w = (int(x) for x in pixels["image_sizes"][0])
        n = (h // 28) * (w // 28)
        extra = {"pixel_values": pixels["pixel_values"], "image_sizes": pixels["image_sizes"]}
    else:
        from transformers import Qwen2VLImageProcessorPil

        processor = Qwen2VLImageProcessorPil(
            patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=28 * 28, max_pixels=56 * 56
        )
        pixels = processor(image, return_tensors="pt")
        n = int(pixels["image_grid_thw"].prod()) // 4
        extra = {"pixel_values": pixels["pixel_values"], "image_grid_thw": pixels["image_grid_thw"]}
    text = tokenizer("Describe", add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([[*text, *[image_id] * n, *text]])
    if family.model_type != "mistral3":  # which positions are image tokens, for M-RoPE
        extra["mm_token_type_ids"] = (input_ids == image_id).long()
    return {"input_ids": input_ids, **extra}


def _logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@ids
def test_language_model_is_cut_and_images_still_work_after_export(family: Family, tmp_path) -> None:
    tokenizer = tokenizer_for(family)
    model = model_for(family, tokenizer)
    assert arch.family(model).decoder == "model.language_model"
    assert all(".language_model." in w.name for w in arch.residual_writers(model))
    inputs, other = (image_inputs(family, tokenizer, _image(s)) for s in (0, 1))
    plain = _logits(model, inputs)
    assert not torch.allclose(plain, _logits(model, other), atol=1e-4)  # the image reaches the logits
    d = torch.randn(arch.d_model(model), generator=torch.Generator().manual_seed(0))
    vision = {k: v.clone() for k, v in model.state_dict().items() if ".language_model." not in k}
    with cut(model, d):
        edited = _logits(model, inputs)
        out = export(model, tokenizer, tmp_path / "out")
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in vision.items())  # vision untouched
    assert not torch.allclose(edited, plain, atol=1e-4)
    reloaded = model_class(AutoConfig.from_pretrained(out)).from_pretrained(out)
    with torch.no_grad():
        for param in reloaded.parameters():  # off the memory map (see test_families._aligned)
            param.data = param.data.clone()
    assert torch.equal(_logits(reloaded, inputs), edited)
    loaded, _ = load_model(out, device="cpu")  # vauban's loader picks the image-text-to-text class
    assert type(loaded) is type(model)


def test_qwen3_5_checkpoint_loads_as_its_language_model(tmp_path) -> None:
    """A Qwen 3.5 (vision-language) checkpoint loads through vauban as its language model
    (transformers maps ``qwen3_5`` to Qwen3_5ForCausalLM), the tested "Qwen 3.5" row, with the
    same text logits as the whole model."""
    from transformers import AutoModelForImageTextToText

    from families import _BASE, _LIN, _QWEN_VL, _TWO, BY_NAME

    text = {
        **_BASE,
        **_LIN,
        **_TWO,
        "head_dim": 16,
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
    }
    config = AutoConfig.for_model("qwen3_5", text_config=text, **_QWEN_VL)
    whole = AutoModelForImageTextToText.from_config(config)
    whole.save_pretrained(tmp_path)
    tokenizer_for(BY_NAME["Qwen 3.5"]).save_pretrained(tmp_path)
    model, _ = load_model(tmp_path, device="cpu")
    assert model.config.model_type == "qwen3_5_text" and arch.family(model).name == "qwen3_next"
    ids = {"input_ids": torch.tensor([[5, 9, 17, 33]])}
    assert torch.equal(_logits(model, ids), _logits(whole.eval(), ids))
