"""What a request is answered with: the pieces to emit, why it ends, and whether it is "correct".

Pure functions from a parsed request body to a `Planned` answer. The body has already been
checked for shape by the endpoint (messages is a list, limits are integers).

Length rules, as OpenAI's `max_tokens` works: the natural answer has `default_tokens` tokens;
a continuation emits what follows the prefix (after the prefix again when `echo_prefix`);
`max_tokens` bounds the tokens *this* response emits and cuts with finish_reason "length". So
a gateway continuing a cut stream should send the original limit minus the tokens delivered.

Correctness (for routing benchmarks) depends on the prompt key, the model name and the
`[nonce:...]` tag, never on timing, so a benchmark run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.sim import text

DEFAULT_TASK = "generate"


@dataclass(frozen=True)
class ToolPlan:
    name: str
    arguments: str


@dataclass(frozen=True)
class Planned:
    prompt_key: str
    pieces: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int
    task: str
    nonce: str | None
    prefix: str = ""  # the part of the answer the client already had
    tool: ToolPlan | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _limited(pieces: list[str], limit: int | None, natural: str) -> tuple[tuple[str, ...], str]:
    if limit is not None and limit < len(pieces):
        return tuple(pieces[:limit]), "length"
    return tuple(pieces), natural


def _continue(key: str, prefix: str, n_tokens: int, echo: bool) -> list[str]:
    """The pieces after `prefix` up to the natural end of the answer (`n_tokens` tokens)."""
    natural = text.answer_tokens(key, n_tokens)
    if len(prefix) > len("".join(natural)):
        # The client already has more than this simulator would say: nothing is left.
        sent = text.remaining_tokens(text.answer_tokens(key, prefix.count(" ") + 1), prefix)[0]
        return sent if echo else []
    sent, rest = text.remaining_tokens(natural, prefix)
    return sent + rest if echo and prefix else rest


def _tool_name(body: dict[str, Any], messages: Sequence[Any], all_text: str) -> str | None:
    """The function to call when this request should be answered with a tool call."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or text.TOOL_MARKER not in all_text:
        return None
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "tool":
        return None  # the tool already answered: now the model replies in text
    function = tools[0].get("function") if isinstance(tools[0], dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else "tool"


def plan_chat(
    body: dict[str, Any], *, default_tokens: int, limit: int | None, echo_prefix: bool
) -> Planned:
    messages: list[Any] = body["messages"]
    texts = [text.content_text(m.get("content")) for m in messages if isinstance(m, dict)]
    all_text = "\n".join(texts)
    found = text.tags(all_text)
    prompt_tokens = max(1, sum(text.estimate_tokens(t) for t in texts))
    continuation = text.chat_continuation(messages, default_tokens)
    key = continuation.prompt_key
    tool_name = _tool_name(body, messages, all_text)
    if tool_name is not None:
        arguments = text.tool_arguments(key)
        pieces, finish = _limited(text.split_pieces(arguments), limit, "tool_calls")
        return Planned(
            key,
            pieces,
            finish,
            prompt_tokens,
            found.get("task", DEFAULT_TASK),
            found.get("nonce"),
            tool=ToolPlan(tool_name, arguments),
        )
    pieces, finish = _limited(
        _continue(key, continuation.prefix, default_tokens, echo_prefix), limit, "stop"
    )
    return Planned(
        key,
        pieces,
        finish,
        prompt_tokens,
        found.get("task", DEFAULT_TASK),
        found.get("nonce"),
        prefix=continuation.prefix,
    )


def plan_completion(
    prompt: str, *, default_tokens: int, limit: int | None, echo_prefix: bool
) -> Planned:
    continuation = text.completion_continuation(prompt, default_tokens)
    found = text.tags(prompt)
    pieces, finish = _limited(
        _continue(continuation.prompt_key, continuation.prefix, default_tokens, echo_prefix),
        limit,
        "stop",
    )
    return Planned(
        continuation.prompt_key,
        pieces,
        finish,
        max(1, text.estimate_tokens(prompt)),
        found.get("task", DEFAULT_TASK),
        found.get("nonce"),
        prefix=continuation.prefix,
    )


def is_correct(prompt_key: str, model: str, nonce: str | None, quality: float) -> bool:
    """Whether `model` answers this prompt correctly: a fixed draw below its task quality."""
    return text.unit_hash("correct", prompt_key, model, nonce or "") < quality
