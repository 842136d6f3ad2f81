"""The cards of a 24-game problem drawn as one image: one card per panel, the layout (which panel holds
which card, where the glyph sits in it) and the colours drawn from a seeded RNG.

A panel is 28 x 28 pixels, one image token of a Qwen2-VL-style model (14-pixel patches merged 2 x 2),
so that each card is one token; the panels form two rows, with an empty panel where there are more
panels than cards.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

PANEL = 28


@lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=15)


def _colour(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    return tuple(rng.randint(lo, hi) for _ in range(3))


def image_size(n_cards: int, panel: int = PANEL) -> tuple[int, int]:
    """(width, height) of the image of `n_cards` cards: two rows of panels."""
    return math.ceil(n_cards / 2) * panel, 2 * panel


def draw_cards(cards: list[str] | tuple[str, ...], key: str, panel: int = PANEL):
    """The image of `cards`; `key` seeds its layout and colours (the same key, the same image)."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"cards:{key}")
    columns = math.ceil(len(cards) / 2)
    image = Image.new("RGB", image_size(len(cards), panel), _colour(rng, 0, 60))  # a dark table
    draw = ImageDraw.Draw(image)
    slots = rng.sample(range(2 * columns), len(cards))
    for card, slot in zip(cards, slots, strict=True):
        x, y = (slot % columns) * panel, (slot // columns) * panel
        draw.rectangle([x + 1, y + 1, x + panel - 2, y + panel - 2], fill=_colour(rng, 190, 255))  # a light face
        ink = _colour(rng, 0, 110)
        dx, dy = rng.randint(-2, 2), rng.randint(-2, 2)
        draw.text((x + panel / 2 + dx, y + panel / 2 + dy), card, fill=ink, font=_font(), anchor="mm")
    return image
