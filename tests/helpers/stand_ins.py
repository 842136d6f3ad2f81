"""Tiny local stand-ins for a GPU recipe's model and data: a Qwen2 model directory with a chat
template, and a prompt/response JSONL file with NuminaMath-CoT's column names."""

import json

from tests.conftest import tiny_lm

CHARS = "0123456789+-*/=()., abcdefghijklmnopqrstuvwxyz\\{}^$?\n"


def make_stand_ins(root, n_first: int = 8):
    """`root/model` and `root/numina.jsonl` (8 * n_first rows); returns root."""
    from dftlab.data.tokenizer import char_tokenizer

    tok = char_tokenizer(CHARS)
    # roles and an end-of-turn token, as real templates have: the assistant turns are located in its rendering
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    lm = tiny_lm("qwen2", vocab=len(tok), tie=True)
    lm.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rows = [{"problem": f"what is {a}+{b}?", "solution": f"{a}+{b}={a + b}, so \\boxed{{{a + b}}}"}
            for a in range(n_first) for b in range(8)]
    (root / "numina.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root
