"""Conversations rendered once by the chat template, and the character spans of their targets.

`render()` returns the text of the whole conversation, exactly as the template writes it, and the
character spans to train on (`train_on`): every assistant turn (`assistant`), the final one (`last`)
or everything (`all`). A turn's span is what the model writes: its content and the template's
end-of-turn token (`<|eot_id|>`, `<|im_end|>`), never the role header before it. It is found by,
in this order:

1. the template's generation markers (`{% generation %}` ... `{% endgeneration %}`) where it has them;
2. prefix rendering: the conversation up to the turn with the generation prompt (which ends with
   the turn's header) and up to the end of the turn; both must be prefixes of the whole rendering,
   which a template that rewrites earlier turns when later ones follow (for example one that drops
   the reasoning of earlier assistant turns) breaks;
3. the turn's content found in the rendering after the previous turn, followed by the template's
   end-of-turn text (learned by rendering a probe conversation).

A turn that none of them locates raises `SpanError`, which names the turn: a wrong mask is never
guessed. The renderer only needs `apply_chat_template` (and `chat_template`, `special_tokens_map` for
the markers), so a multimodal processor can stand in for a tokenizer; turning characters into tokens
is `token_spans`, the one step that depends on the tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TRAIN_ON = ("assistant", "last", "all")
_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBE = "dftlab-probe-7c1f"


class SpanError(ValueError):
    """A target turn that cannot be located in the rendered conversation."""


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # character ranges [start, end) of the targets, in order


def _apply(template, messages, tools, generation_prompt: bool, **kwargs) -> str:
    return template.apply_chat_template(messages, tools=tools, tokenize=False,
                                        add_generation_prompt=generation_prompt, **kwargs)


def target_turns(messages: list[dict], train_on: str, prompt_turns: int = 0) -> list[int]:
    """Indices of the messages trained on: the assistant turns after the prompt (`last`: the final one)."""
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= prompt_turns]
    return turns[-1:] if train_on == "last" else turns


def end_of_turn(template, **kwargs) -> str:
    """The text the template writes after an assistant turn's content, up to its last non-space character."""
    text = _apply(template, [{"role": "user", "content": "ping"}, {"role": "assistant", "content": _PROBE}], None,
                  False, **kwargs)
    return text[text.rindex(_PROBE) + len(_PROBE):].rstrip()


def _generation_spans(template, messages, tools, **kwargs) -> list[tuple[int, int]] | None:
    source = getattr(template, "chat_template", None)
    if not isinstance(source, str) or not _MARKER.search(source):
        return None
    from transformers.utils.chat_template_utils import render_jinja_template

    special = dict(getattr(template, "special_tokens_map", {}) or {})
    _, indices = render_jinja_template([messages], tools=tools, chat_template=source,
                                       return_assistant_tokens_mask=True, **{**special, **kwargs})
    return list(indices[0])


def _extend(text: str, start: int, end: int, eot: str) -> tuple[int, int]:
    """A span that ends after the end-of-turn text when it directly follows (marker blocks may stop short)."""
    if eot and not text[start:end].rstrip().endswith(eot) and text.startswith(eot, end):
        end += len(eot)
    return start, end


def render(template, messages: list[dict], tools: list[dict] | None = None, train_on: str = "assistant",
           prompt_turns: int = 0, **kwargs) -> Rendered:
    """The conversation as the template renders it, with its target spans (see the module docstring)."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on={train_on!r}: choose one of {', '.join(TRAIN_ON)}")
    text = _apply(template, messages, tools, False, **kwargs)
    if train_on == "all":
        return Rendered(text, [(0, len(text))])
    turns = target_turns(messages, train_on, prompt_turns)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    eot = end_of_turn(template, **kwargs)
    marked = _generation_spans(template, messages, tools, **kwargs)
    if marked is not None and len(marked) == len(assistant):
        by_turn = dict(zip(assistant, marked, strict=True))
        return Rendered(text, [_extend(text, *by_turn[i], eot) for i in turns])
    spans, searched_from = [], 0
    for i in turns:
        span = _by_prefix(template, messages, tools, text, i, **kwargs) or _by_content(text, messages[i], searched_from,
                                                                                     eot)
        if span is None:
            raise SpanError(
                f"assistant turn {i} (message {i + 1} of {len(messages)}) cannot be located in the rendered "
                f"conversation: the chat template changes earlier turns when later ones follow, or rewrites the "
                f"turn's content (e.g. drops its reasoning); use data.task.train_on=last, or a template with "
                f"{{% generation %}} markers"
            )
        spans.append(span)
        searched_from = span[1]
    return Rendered(text, spans)


def _by_prefix(template, messages, tools, text: str, i: int, **kwargs) -> tuple[int, int] | None:
    try:
        before = _apply(template, messages[:i], tools, True, **kwargs) if i else ""
        after = _apply(template, messages[: i + 1], tools, False, **kwargs).rstrip()
    except Exception:  # a template may refuse a partial conversation (e.g. one that must end with a user turn)
        return None
    if not i or not text.startswith(before) or not text.startswith(after) or len(after) <= len(before):
        return None
    return len(before), len(after)


def _by_content(text: str, message: dict, start: int, eot: str) -> tuple[int, int] | None:
    content = (message.get("content") or "").strip()
    if not content or not eot:
        return None
    at = text.find(content, start)
    if at < 0 or not text.startswith(eot, at + len(content)):
        return None
    return at, at + len(content) + len(eot)


def token_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token ranges [a, b) of the tokens that overlap each character span (offsets from the tokenizer)."""
    out = []
    for start, end in spans:
        inside = [k for k, (s, e) in enumerate(offsets) if s < end and e > start and e > s]
        if inside:
            out.append((inside[0], inside[-1] + 1))
    return out


def tokenize(tokenizer, rendered: Rendered) -> tuple[list[int], list[tuple[int, int]]]:
    """The rendered text's token ids (special tokens come from the template itself) and target token ranges."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: target spans need its offset mapping")
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), token_spans([tuple(o) for o in enc["offset_mapping"]], rendered.spans)
