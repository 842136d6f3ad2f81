"""The 24-card game as a visual task: the cards drawn as an image (`vision.cards`), the rule and the target
stated in text, the same problems, splits and verifier as the text game (`dftlab.data.game24_task`).

    user       [image of A, 7, K, 3]  J=8,Q=9,K=10|24:
    assistant  10*3=30;7-1=6;30-6=24

Images are written once to `image_dir` (named by the problem and the seed), so that rows and evaluation
records hold paths, as rows of a data file do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dftlab.data import game24
from dftlab.data.game24_task import Game24Task
from dftlab.vision.cards import draw_cards, image_size


class Game24VisionTask(Game24Task):
    name = "game24_vision"
    chat_template = True  # a conversation: the image and the rule in the user turn

    def __init__(self, image_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.image_dir = Path(image_dir).expanduser()

    def _image(self, p: game24.Problem) -> str:
        key = f"{p.prompt}:{self.seed}"
        path = self.image_dir / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            draw_cards(p.cards, key).save(tmp, format="PNG")
            os.replace(tmp, path)  # atomic: another process may draw the same card at once
        return str(path)

    def _rows(self, problems: list[game24.Problem]) -> list[dict]:
        rows = []
        for p in problems:
            text = f"{game24.rule_text(p.rule)}|{p.target}:"
            parts = [{"type": "image", "image": self._image(p)}, {"type": "text", "text": text}]
            user = {"role": "user", "content": parts}
            rows.append({
                "messages": [user, {"role": "assistant", "content": p.solution}],
                "image_sizes": [image_size(len(p.cards))],
                "prompt": [user],  # what evaluation generates from
                "problem": p.prompt,  # the text game's prompt, cards included: what the verifier reads
            })
        return rows

    def score(self, row: dict, completion: str) -> dict[str, bool]:
        verdict = game24.verify(row["problem"], completion)
        return {"correct": verdict.correct, "well_formed": verdict.well_formed}
