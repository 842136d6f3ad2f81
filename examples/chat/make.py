"""Writes train.jsonl and test.jsonl: short conversations with a calculator that answers with the number only.

    python examples/chat/make.py      # deterministic: the shipped files are its output

Each conversation is a system turn, then two or three questions, each answered by one assistant turn; the
later questions build on the earlier answers, so a model must read the whole conversation.
"""

import json
import random
from pathlib import Path

SYSTEM = "You are a calculator. Answer with the number only."


def conversation(rng: random.Random) -> dict:
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    value = a + b
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": str(value)}]
    for _ in range(rng.randint(1, 2)):
        c = rng.randint(2, 19)
        if rng.random() < 0.5:
            messages.append({"role": "user", "content": f"Now add {c}."})
            value += c
        else:
            messages.append({"role": "user", "content": f"Now subtract {c}."})
            value -= c
        messages.append({"role": "assistant", "content": str(value)})
    return {"messages": messages}


def main() -> None:
    rng = random.Random(0)
    rows = [conversation(rng) for _ in range(600)]
    here = Path(__file__).parent
    for name, part in (("train.jsonl", rows[:500]), ("test.jsonl", rows[500:])):
        (here / name).write_text("".join(json.dumps(r) + "\n" for r in part))


if __name__ == "__main__":
    main()
