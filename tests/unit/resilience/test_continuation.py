"""Continuation requests and the prefix gate (pure functions, no I/O)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from gateway.proxy.request import ClientRequest, Endpoint, parse_body
from gateway.resilience.continuation import (
    CONTINUE_INSTRUCTION,
    PrefixGate,
    PrefixMismatch,
    continuation_body,
    other_form,
    remaining_tokens,
    strip_repeated_tool_headers,
)

SENT = " amber basalt cobalt"
REST = " dune ember fjord"


def chat(**extra: Any) -> ClientRequest:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}],
            **extra}
    return parse_body(Endpoint.CHAT, orjson.dumps(body))


def completion(prompt: Any, **extra: Any) -> ClientRequest:
    body = {"model": "m", "stream": True, "prompt": prompt, **extra}
    return parse_body(Endpoint.COMPLETIONS, orjson.dumps(body))


def test_assistant_form_appends_a_trailing_assistant_message() -> None:
    request = chat(temperature=0)
    body = continuation_body(request, "assistant", SENT)
    assert body["messages"] == [{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": SENT}]
    assert body["temperature"] == 0
    assert request.body["messages"] == [{"role": "user", "content": "hi"}]  # not mutated


def test_none_form_quotes_the_text_in_a_final_user_message() -> None:
    body = continuation_body(chat(), "none", SENT)
    assert body["messages"][:1] == [{"role": "user", "content": "hi"}]
    assert body["messages"][1] == {"role": "user",
                                   "content": CONTINUE_INSTRUCTION.format(text=SENT)}
    assert SENT in body["messages"][1]["content"]


def test_original_form_is_the_request_unchanged_limit_included() -> None:
    request = chat(max_tokens=40)
    assert continuation_body(request, "original", SENT, delivered_tokens=10) == request.body


def test_completions_extend_the_prompt_and_leave_batches_alone() -> None:
    assert continuation_body(completion("Once"), "none", SENT)["prompt"] == "Once" + SENT
    batch = completion(["a", "b"])
    assert continuation_body(batch, "none", SENT)["prompt"] == ["a", "b"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("form", ["assistant", "none"])
def test_the_continuation_asks_only_for_the_tokens_left(field: str, form: Any) -> None:
    request = chat(**{field: 40})
    assert continuation_body(request, form, SENT, delivered_tokens=15)[field] == 25
    assert continuation_body(request, form, SENT, delivered_tokens=40)[field] == 1
    assert "max_tokens" not in continuation_body(chat(), form, SENT, delivered_tokens=15)


def test_remaining_tokens() -> None:
    assert remaining_tokens(chat(), 100) is None
    assert remaining_tokens(chat(max_tokens=10), 4) == 6
    assert remaining_tokens(chat(max_completion_tokens=10, max_tokens=99), 4) == 6
    assert remaining_tokens(chat(max_tokens=10), 12) == 0


def test_other_form() -> None:
    assert other_form("assistant") == "none"
    assert other_form("none") == "assistant"
    assert other_form("original") is None


def feed_all(gate: PrefixGate, pieces: list[str]) -> str:
    out = "".join(gate.feed(p) for p in pieces)
    gate.finish()
    return out


def random_pieces(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(8, len(text) - 1))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("required", [False, True])
def test_an_echo_is_stripped_however_it_is_split(required: bool) -> None:
    rng = random.Random(7)
    for _ in range(200):
        pieces = random_pieces(SENT + REST, rng)
        assert feed_all(PrefixGate(SENT, required=required), pieces) == REST


def test_a_continuation_without_echo_passes_whole_and_at_once() -> None:
    gate = PrefixGate(SENT, required=False)
    assert gate.feed(" dune") == " dune"
    assert gate.feed(" ember") == " ember"


def test_text_held_as_a_possible_echo_is_released_when_it_diverges() -> None:
    gate = PrefixGate(SENT, required=False)
    assert gate.feed(" amber") == ""  # could be the start of an echo
    assert gate.feed(" dune") == " amber dune"  # it was not: nothing lost


def test_a_required_prefix_that_differs_is_refused() -> None:
    with pytest.raises(PrefixMismatch):
        PrefixGate(SENT, required=True).feed(" dune")
    gate = PrefixGate(SENT, required=True)
    assert gate.feed(" amber basalt") == ""
    with pytest.raises(PrefixMismatch):
        gate.finish()  # ended before it passed the text already sent
    PrefixGate(SENT, required=False).finish()


def test_nothing_sent_means_nothing_to_gate() -> None:
    assert feed_all(PrefixGate("", required=True), [" amber", " dune"]) == " amber dune"


def test_tool_headers_an_earlier_attempt_sent_are_not_repeated() -> None:
    headers: set[int] = set()
    first = [{"index": 0, "id": "call_1", "type": "function",
              "function": {"name": "lookup", "arguments": ""}}]
    assert strip_repeated_tool_headers(first, frozenset(), headers) is False
    assert headers == {0} and first[0]["id"] == "call_1"
    restart = [{"index": 0, "id": "call_2", "type": "function",
                "function": {"name": "lookup", "arguments": ""}},
               {"index": 1, "id": "call_3", "type": "function",
                "function": {"name": "other", "arguments": ""}}]
    assert strip_repeated_tool_headers(restart, frozenset(headers), headers) is False
    assert restart[0] == {"index": 0, "function": {"arguments": ""}}
    assert restart[1]["id"] == "call_3" and headers == {0, 1}
    args = [{"index": 0, "function": {"arguments": '{"q'}}]
    assert strip_repeated_tool_headers(args, frozenset(headers), headers) is True
    assert args == [{"index": 0, "function": {"arguments": '{"q'}}]
