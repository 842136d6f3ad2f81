"""Held-out examples of a user's own data as the evaluation (`eval_task=reference`): a conversation's
prompt is every message before its final assistant turn, generated from through the chat template."""

import json

import pytest

from dftlab.data.encode import prompt_ids
from dftlab.data.tokenizer import char_tokenizer
from dftlab.evaluation.generate import generate
from dftlab.evaluation.reference_task import ReferenceTask
from dftlab.evaluation.runner import generate_and_score
from tests.conftest import tiny_lm

CHAT = [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}, {"role": "user", "content": "+3"}]


@pytest.fixture(scope="module")
def tok():
    tok = char_tokenizer("0123456789+=:\n abcdefghijklmnopqrstuvwxyz")
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    return tok


def _task(tmp_path, **kwargs):
    rows = [{"messages": [*CHAT, {"role": "assistant", "content": "5"}]},
            {"messages": [*CHAT, {"role": "assistant", "content": "5"}]},  # the same prompt: completed once
            {"messages": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}]}]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ReferenceTask(str(path), **kwargs)


def test_prompts_and_references_from_conversations(tmp_path):
    (rows,) = _task(tmp_path).test_splits.values()
    assert [r["prompt"] for r in rows] == [CHAT, CHAT, [{"role": "user", "content": "2+2"}]]
    assert [r["answer"] for r in rows] == ["5", "5", "4"]
    task = _task(tmp_path, match="contains")
    assert task.score(rows[0], " 5 ") == {"correct": True, "well_formed": True}
    assert task.score(rows[0], "it is 5") == {"correct": True, "well_formed": True}
    assert _task(tmp_path).score(rows[0], "it is 5")["correct"] is False


def test_conversation_prompts_are_generated_from_the_template(tmp_path, tok):
    lm = tiny_lm(vocab=len(tok), **{f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("pad", "bos", "eos")})
    task = _task(tmp_path, max_new_tokens=5)
    records = generate_and_score(lm.eval(), tok, task, task.test_splits)["test"]
    alone = [generate(lm, tok, [r["prompt"]], chat_template=True, max_new_tokens=5)[0] for r in records]
    assert [r["completions"] for r in records] == alone
    assert tok.decode(prompt_ids(tok, CHAT, True)) == "user: 1+1</s>\nassistant: 2</s>\nuser: +3</s>\nassistant: "
