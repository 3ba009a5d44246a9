"""Continuing a broken stream on another model, and gating the continuation's text.

Forms of the continuation request (the contract's rules):
- chat, `prefill = "assistant"`: the original messages plus a trailing assistant message
  holding the text so far; the backend continues that message.
- chat, `prefill = "none"`: the original messages plus one final user message that quotes
  the text so far and asks to continue it.
- completions: the prompt with the text so far appended.
- `failover.include_prefix = false`: the original request unchanged; the new answer must
  start with the text already sent and is relayed from the point where it passes it.

A continuation request that carries the text so far asks for `max_tokens` (or
`max_completion_tokens`) minus the tokens already delivered, since upstreams count the limit
per response; the original request (`include_prefix = false`) regenerates the whole answer and
keeps the original limit. `remaining_tokens` == 0 means the answer already reached its limit.

A tool call is restarted, never continued (`strip_repeated_tool_headers`): a restart must not
repeat the id and name the client already has, and arguments that reached the client make a
restart impossible.

PrefixGate removes an echo of the text already sent from the start of a continuation (models
asked to continue often repeat it). Invariant: the client never receives a character twice,
and with `required` it never receives text spliced onto a prefix that does not match.
"""

from __future__ import annotations

from typing import Any, Literal

from gateway.proxy.request import ClientRequest, Endpoint

Form = Literal["assistant", "none", "original"]

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stops, without repeating "
    "any of it and without any preamble. The answer so far, between the markers:\n"
    "<<<ANSWER SO FAR>>>\n{text}\n<<<END>>>"
)


class PrefixMismatch(Exception):
    """A restarted answer does not begin with the text already sent."""


_LIMIT_FIELDS = ("max_completion_tokens", "max_tokens")


def remaining_tokens(request: ClientRequest, delivered: int) -> int | None:
    """Output tokens the answer may still have after `delivered` of them (None: no limit)."""
    if request.max_output_tokens is None:
        return None
    return max(0, request.max_output_tokens - delivered)


def continuation_body(
    request: ClientRequest, form: Form, text: str, delivered_tokens: int = 0
) -> dict[str, Any]:
    body = dict(request.body)
    if form == "original":
        return body
    remaining = remaining_tokens(request, delivered_tokens)
    if remaining is not None:
        for field in _LIMIT_FIELDS:
            if body.get(field) is not None:
                body[field] = max(1, remaining)
    if request.endpoint is Endpoint.CHAT:
        messages = list(body["messages"])
        if form == "assistant":
            messages.append({"role": "assistant", "content": text})
        else:
            messages.append({"role": "user", "content": CONTINUE_INSTRUCTION.format(text=text)})
        body["messages"] = messages
    elif isinstance(body.get("prompt"), str):
        body["prompt"] = body["prompt"] + text
    return body


def strip_repeated_tool_headers(
    calls: list[Any], announced: frozenset[int], headers: set[int]
) -> bool:
    """Drop id/type/name of tool calls an earlier attempt announced (index in `announced`),
    note newly announced indexes in `headers`; True when a delta carries arguments."""
    has_arguments = False
    for call in calls:
        if not isinstance(call, dict):
            continue
        index = call.get("index", 0)
        function = call.get("function")
        if index in announced:
            call.pop("id", None)
            call.pop("type", None)
            if isinstance(function, dict):
                function.pop("name", None)
        elif call.get("id") or (isinstance(function, dict) and function.get("name")):
            headers.add(index)
        if isinstance(function, dict) and function.get("arguments"):
            has_arguments = True
    return has_arguments


def other_form(form: Form) -> Form | None:
    return {"assistant": "none", "none": "assistant"}.get(form)  # type: ignore[return-value]


class PrefixGate:
    __slots__ = ("_sent", "_held", "_passed", "_required")

    def __init__(self, sent: str, *, required: bool) -> None:
        self._sent = sent
        self._held = ""
        self._passed = not sent
        self._required = required

    def feed(self, text: str) -> str:
        """The part of `text` to relay now (possibly empty while an echo is undecided)."""
        if self._passed:
            return text
        held = self._held + text
        sent = self._sent
        if len(held) < len(sent) and sent.startswith(held):
            self._held = held
            return ""
        self._passed = True
        self._held = ""
        if held.startswith(sent):
            return held[len(sent):]
        if self._required:
            raise PrefixMismatch("the restarted answer differs from the text already sent")
        return held

    def finish(self) -> None:
        """At the end of the continuation: a required restart must have passed the prefix."""
        if self._required and not self._passed:
            raise PrefixMismatch("the restarted answer ended before the text already sent")
