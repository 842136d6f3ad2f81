"""Vision-language models (image-text-to-text, e.g. Qwen2-VL / Qwen2.5-VL): loading, image + text data,
generation with images, the 24-card game drawn as an image. A model is treated as one when its config
has a `vision_config`; the rest of dftlab (losses, engines, module, evaluation) is shared."""
