"""Dataset formats: what a row's columns mean, detected from the columns or set by `data.task.format`.

    messages           {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": ...}], "tools": [...]}
    prompt_completion  {"prompt": str | messages, "completion": str | messages}              (TRL's names)
    prompt_response    {"prompt": str, "response": str}
    alpaca             {"instruction", "input", "output", "system", "history"}                (LLaMA-Factory)
    sharegpt           {"conversations": [{"from": "human"|"gpt"|..., "value": ...}], "system", "tools"}
    text               {"text": str}                                        language modelling: every token a target

`data.task.columns` renames a format's fields to the file's columns (`{prompt: question, response: answer}`).
Every row becomes one of three examples, which is all the encoder knows:

    {"prompt": str, "response": str}                      a pair
    {"messages": [...], "tools": [...], "prompt_turns": n}  a conversation; its first n messages are never targets
    {"text": str}                                          a document

A row that does not fit its format gives the reason it is skipped (`records.REASONS`) instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from dftlab.errors import ConfigError

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "observation": "tool", "tool": "tool", "function_call": "assistant"}


@dataclass(frozen=True)
class Format:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional


# in the order of detection: the first whose required columns a source has
FORMATS = {f.name: f for f in (
    Format("messages", ("messages",), ("tools",)),
    Format("sharegpt", ("conversations",), ("system", "tools")),
    Format("prompt_completion", ("prompt", "completion")),
    Format("prompt_response", ("prompt", "response")),
    Format("alpaca", ("instruction", "output"), ("input", "system", "history")),
    Format("text", ("text",)),
)}


def _listing(attr: str) -> str:
    return "; ".join(f"{f.name} ({', '.join(getattr(f, attr))})" for f in FORMATS.values())


def resolve(format: str, columns: dict[str, str], available: set[str], source: str) -> tuple[Format, dict[str, str]]:
    """The format of a source and its field -> column map, from `data.task.format` (`auto`: from the columns)."""
    if format != "auto" and format not in FORMATS:
        raise ConfigError(f"data.task.format={format!r}: choose auto or one of {', '.join(FORMATS)}")
    if format != "auto":
        candidates = [FORMATS[format]]
    else:
        candidates = [f for f in FORMATS.values() if set(columns) <= set(f.fields)]
    if not candidates:
        raise ConfigError(f"data.task.columns names {sorted(columns)}: no format has all of these fields "
                          f"({_listing('fields')})")
    for f in candidates:
        mapping = {field: columns.get(field, field) for field in f.fields}
        if all(mapping[field] in available for field in f.required):
            return f, {field: col for field, col in mapping.items() if field in f.required or col in available}
    f = candidates[0]
    if format != "auto" or columns:  # the user chose: name the first column that is not there
        for field in f.required:
            column = columns.get(field, field)
            if column not in available:
                raise ConfigError(f"data.task.columns.{field}={column!r} is not a column of {source}; "
                                  f"its columns are: {', '.join(sorted(available))}")
    raise ConfigError(
        f"data.task.format=auto: cannot tell the format of {source} from its columns ({', '.join(sorted(available))}); "
        f"formats: {_listing('required')}. "
        f"Set data.task.format and data.task.columns"
    )


class Bad(Exception):
    """A row that does not fit its format; `reason` is how it is counted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _text(value, empty_reason: str) -> str:
    if value is None:
        raise Bad("missing_field")
    if not isinstance(value, str):
        raise Bad("not_text")
    if not value.strip():
        raise Bad(empty_reason)
    return value


def _list(value):
    """A list, or a JSON list in a string (CSV cells, LLaMA-Factory's `tools`)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise Bad("bad_message") from None
    if not isinstance(value, list):
        raise Bad("not_text")
    return value


def _content(value):
    """Message content: a string, or a list of text parts (joined); None is left to the template (tool calls)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise Bad("not_text")


def _messages(value, prompt_turns: int = 0) -> dict:
    messages = []
    for m in _list(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise Bad("bad_message")
        if m["role"] not in ROLES:
            raise Bad("unknown_role")
        messages.append({**m, "content": _content(m.get("content"))})
    return _conversation(messages, prompt_turns)


def _conversation(messages: list[dict], prompt_turns: int = 0, tools=None) -> dict:
    targets = [m for m in messages[prompt_turns:] if m["role"] == "assistant"]
    if not targets:
        raise Bad("no_assistant_turn")
    for m in targets:
        if not (m.get("content") or "").strip() and not m.get("tool_calls"):
            raise Bad("empty_response")
    out = {"messages": messages, "prompt_turns": prompt_turns}
    if tools is not None:
        out["tools"] = tools
    return out


def _tools(row: dict, columns: dict[str, str]):
    value = row.get(columns["tools"]) if "tools" in columns else None
    if value in (None, "", []):
        return None
    tools = _list(value)
    if not all(isinstance(t, dict) for t in tools):
        raise Bad("bad_message")
    return tools


def normalise(f: Format, row: dict, columns: dict[str, str]) -> dict:
    """One source row as an example (a pair, a conversation or a document); raises `Bad`."""
    get = {field: row.get(column) for field, column in columns.items()}
    if f.name == "messages":
        if get["messages"] is None:
            raise Bad("missing_field")
        example = _messages(get["messages"])
        if (tools := _tools(row, columns)) is not None:
            example["tools"] = tools
        return example
    if f.name == "sharegpt":
        if get["conversations"] is None:
            raise Bad("missing_field")
        messages = [{"role": "system", "content": get["system"]}] if isinstance(get.get("system"), str) and \
            get["system"].strip() else []
        for turn in _list(get["conversations"]):
            if not isinstance(turn, dict):
                raise Bad("bad_message")
            role, value = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
            if role not in SHAREGPT_ROLES:
                raise Bad("unknown_role")
            messages.append({"role": SHAREGPT_ROLES[role], "content": _content(value)})
        return _conversation(messages, tools=_tools(row, columns))
    if f.name == "prompt_completion":
        prompt, completion = get["prompt"], get["completion"]
        if prompt is None or completion is None:
            raise Bad("missing_field")
        if isinstance(prompt, str) and isinstance(completion, str):
            return {"prompt": _text(prompt, "empty_prompt"), "response": _text(completion, "empty_response")}
        if isinstance(prompt, str):  # a string prompt before a conversational completion: one user turn
            prompt = [{"role": "user", "content": _text(prompt, "empty_prompt")}]
        head = _list(prompt)
        return _messages(head + _list(completion), prompt_turns=len(head))
    if f.name == "prompt_response":
        return {"prompt": _text(get["prompt"], "empty_prompt"), "response": _text(get["response"], "empty_response")}
    if f.name == "alpaca":
        instruction = _text(get["instruction"], "empty_prompt")
        extra = get.get("input")
        if extra is not None and not isinstance(extra, str):
            raise Bad("not_text")
        prompt = f"{instruction}\n{extra}" if extra and extra.strip() else instruction
        response = _text(get["output"], "empty_response")
        system, history = get.get("system"), get.get("history")
        if not (isinstance(system, str) and system.strip()) and not history:
            return {"prompt": prompt, "response": response}
        messages = [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
        for pair in _list(history) if history else []:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise Bad("bad_message")
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return _conversation(messages)
    if f.name == "text":
        return {"text": _text(get["text"], "empty_text")}
    raise AssertionError(f.name)
