"""Conversations rendered by real chat templates (Llama 3.1, Qwen2.5; SmolLM2's in tests/test_smollm2.py), with
tokenizers built here: the decoded target tokens are exactly the assistant contents and their end-of-turn tokens."""

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from dftlab.data import chat
from dftlab.data.encode import EncodeSettings, NeedsTemplate, encode_example

TEMPLATES = Path(__file__).parent / "chat_templates"
CORPUS = ["The capital of France is Paris.", "What is 2 + 2? It is 4.", "Hello! How can I help you today?",
          "Tell me a joke about cats.", "get_weather city Paris temperature 21 degrees sunny", "You are helpful."]
FAMILIES = {
    "llama3": dict(template="llama-3.1-instruct.jinja", bos="<|begin_of_text|>", eos="<|eot_id|>",
                   special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                            "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"], eot="<|eot_id|>"),
    "qwen2": dict(template="qwen2.5-instruct.jinja", bos=None, eos="<|im_end|>",
                  special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eot="<|im_end|>"),
}

CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And 2 + 2?"},
    {"role": "assistant", "content": "It is 4."},
]


def byte_bpe(special: list[str], bos: str | None, eos: str, template: str) -> PreTrainedTokenizerFast:
    """A small byte-level BPE (the kind Llama 3 and Qwen2 use) trained here, with the family's special tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=eos)
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    spec = FAMILIES[request.param]
    template = (TEMPLATES / spec["template"]).read_text()
    return request.param, byte_bpe(spec["special"], spec["bos"], spec["eos"], template), spec["eot"]


def decoded_targets(tok, e) -> list[str]:
    return [tok.decode(e.input_ids[a:b]) for a, b in e.target_spans()]


def test_targets_are_the_assistant_turns_with_their_end_of_turn_token(family):
    name, tok, eot = family
    e = encode_example(tok, {"messages": CONVERSATION}, EncodeSettings(512, chat_template=True))
    assert decoded_targets(tok, e) == [f"Paris.{eot}", f"It is 4.{eot}"]
    # the rest of the conversation is exactly the template's rendering, unchanged by tokenisation
    assert tok.decode(e.input_ids) == tok.apply_chat_template(CONVERSATION, tokenize=False)
    last = encode_example(tok, {"messages": CONVERSATION}, EncodeSettings(512, True, train_on="last"))
    assert decoded_targets(tok, last) == [f"It is 4.{eot}"]
    everything = encode_example(tok, {"messages": CONVERSATION}, EncodeSettings(512, True, train_on="all"))
    assert everything.n_targets == len(everything.input_ids) - 1


def test_a_pair_with_the_template_ends_with_the_end_of_turn_token_not_eos(family):
    name, tok, eot = family
    e = encode_example(tok, {"prompt": "What is 2 + 2?", "response": "4"}, EncodeSettings(512, chat_template=True))
    assert decoded_targets(tok, e) == [f"4{eot}"]
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], tokenize=False,
                                     add_generation_prompt=True)
    assert tok.decode(e.input_ids[: e.prompt_len]) == prompt  # the generation prompt, header included


def test_tool_calls_and_tool_results(family):
    name, tok, eot = family
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": call}]},
        {"role": "tool", "content": "21 degrees, sunny"},
        {"role": "assistant", "content": "It is 21 degrees and sunny."},
    ]
    e = encode_example(tok, {"messages": messages, "tools": tools}, EncodeSettings(1024, chat_template=True))
    rendered = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    assert "get_weather" in tok.decode(e.input_ids[: e.target_spans()[0][0]])  # the schema is in the prompt
    first, second = decoded_targets(tok, e)
    if name == "llama3":
        assert first == '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'
    else:
        # what the model writes after the generation prompt '<|im_start|>assistant\n'
        assert first == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    assert second == f"It is 21 degrees and sunny.{eot}"
    assert "21 degrees, sunny" not in first + second  # the tool's result is not a target
    assert tok.decode(e.input_ids) == rendered


def test_prompt_completion_messages_train_on_the_completion_only(family):
    name, tok, eot = family
    example = {"messages": CONVERSATION, "prompt_turns": 3}  # TRL's prompt/completion: the prompt ends at turn 3
    e = encode_example(tok, example, EncodeSettings(512, chat_template=True))
    assert decoded_targets(tok, e) == [f"It is 4.{eot}"]


def test_truncation_keeps_the_targets_before_the_cut(family):
    name, tok, eot = family
    full = encode_example(tok, {"messages": CONVERSATION}, EncodeSettings(512, chat_template=True))
    (a1, b1), (a2, b2) = full.target_spans()
    cut = encode_example(tok, {"messages": CONVERSATION}, EncodeSettings(a2 + 2, chat_template=True))
    assert cut.truncated and cut.target_spans() == [(a1, b1), (a2, a2 + 2)]
    assert encode_example(tok, {"messages": CONVERSATION}, EncodeSettings(a1, chat_template=True)) is None


def test_without_the_template_only_a_single_pair_is_accepted(family):
    name, tok, eot = family
    pair = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    e = encode_example(tok, pair, EncodeSettings(64, chat_template=False))
    assert decoded_targets(tok, e) == [f"Hello{tok.eos_token}"]
    with pytest.raises(NeedsTemplate, match="5 messages"):
        encode_example(tok, {"messages": CONVERSATION}, EncodeSettings(64, chat_template=False))


def test_generation_markers_are_used_and_extended_over_the_end_of_turn_token(family):
    name, tok, eot = family
    tok = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token)
    # a ChatML template whose markers hold the content only: the span is extended over <|im_end|>
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' }}{% if m.role == 'assistant' %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    rendered = chat.render(tok, CONVERSATION)
    assert [rendered.text[a:b] for a, b in rendered.spans] == ["Paris.<|im_end|>", "It is 4.<|im_end|>"]


def test_a_template_that_rewrites_earlier_turns_is_located_by_content_or_refused():
    tok = byte_bpe(FAMILIES["qwen2"]["special"], None, "<|im_end|>", "")
    # like Qwen3's: the reasoning of assistant turns before the last user turn is dropped
    tok.chat_template = (
        "{% set ns = namespace(last=0) %}{% for m in messages %}{% if m.role == 'user' %}"
        "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}{% set c = m.content %}"
        "{% if m.role == 'assistant' and loop.index0 < ns.last %}{% set c = c.split('</think>')[-1].lstrip() %}"
        "{% endif %}{{ '<|im_start|>' + m.role + '\n' + c + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    plain = chat.render(tok, CONVERSATION)  # nothing rewritten: found by prefix rendering
    assert [plain.text[a:b] for a, b in plain.spans] == ["Paris.<|im_end|>", "It is 4.<|im_end|>"]
    thinking = [*CONVERSATION[:2], {"role": "assistant", "content": "<think>easy</think>Paris."}, *CONVERSATION[3:]]
    with pytest.raises(chat.SpanError, match="assistant turn 2"):
        chat.render(tok, thinking)
    last = chat.render(tok, thinking, train_on="last")  # the final turn is never rewritten
    assert [last.text[a:b] for a, b in last.spans] == ["It is 4.<|im_end|>"]


def test_a_conversation_file_trains_through_the_data_module(tmp_path, family):
    from dftlab.data.datamodule import DataModule
    from dftlab.data.text_task import TextTask

    name, tok, eot = family
    rows = [{"messages": CONVERSATION, "id": i} for i in range(12)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = TextTask(str(path), val_size=2)
    dm = DataModule(task, batch_size=4, max_length=512, cache_dir=str(tmp_path / "cache"), tokenizer=tok)
    dm.setup()
    e = dm.datasets["train"].rows[0]
    assert decoded_targets(tok, e) == [f"Paris.{eot}", f"It is 4.{eot}"]
    batch = dm.collate_fn([dm.datasets["train"][(0, e.n_targets)]])
    labels = batch["labels"][0]
    assert tok.decode(labels[labels >= 0]) == f"Paris.{eot}It is 4.{eot}"
