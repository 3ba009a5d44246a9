"""Planning an answer and deciding its correctness (gateway.sim.answers)."""

from __future__ import annotations

import json

from gateway.sim.answers import is_correct, plan_chat, plan_completion
from gateway.sim.text import answer_tokens, full_answer


def _chat(*messages: dict[str, str], **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": list(messages), **extra}


def test_fresh_chat_answer() -> None:
    planned = plan_chat(
        _chat({"role": "user", "content": "hi [task:code] [nonce:7]"}),
        default_tokens=24,
        limit=None,
        echo_prefix=False,
    )
    assert planned.text == full_answer("hi [task:code] [nonce:7]", 24)
    assert planned.finish_reason == "stop"
    assert (planned.task, planned.nonce) == ("code", "7")


def test_max_tokens_cuts_with_length() -> None:
    body = _chat({"role": "user", "content": "hi"})
    planned = plan_chat(body, default_tokens=24, limit=5, echo_prefix=False)
    assert planned.pieces == tuple(answer_tokens("hi", 5))
    assert planned.finish_reason == "length"
    assert plan_chat(body, default_tokens=5, limit=5, echo_prefix=False).finish_reason == "stop"


def test_prefill_continuation_emits_the_rest() -> None:
    prefix = full_answer("hi", 10)
    body = _chat({"role": "user", "content": "hi"}, {"role": "assistant", "content": prefix})
    planned = plan_chat(body, default_tokens=24, limit=None, echo_prefix=False)
    assert planned.prefix == prefix
    assert prefix + planned.text == full_answer("hi", 24)
    assert len(planned.pieces) == 14
    # max_tokens bounds what this response emits, as with OpenAI.
    assert len(plan_chat(body, default_tokens=24, limit=4, echo_prefix=False).pieces) == 4


def test_echo_prefix_repeats_the_prefix_first() -> None:
    prefix = full_answer("hi", 3)
    body = _chat({"role": "user", "content": "hi"}, {"role": "assistant", "content": prefix})
    planned = plan_chat(body, default_tokens=8, limit=None, echo_prefix=True)
    assert planned.text == full_answer("hi", 8)
    fresh = plan_chat(
        _chat({"role": "user", "content": "hi"}), default_tokens=8, limit=None, echo_prefix=True
    )
    assert fresh.text == full_answer("hi", 8)


def test_tool_call_plan() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    body = _chat({"role": "user", "content": "find it [tool]"}, tools=tools)
    planned = plan_chat(body, default_tokens=24, limit=None, echo_prefix=False)
    assert planned.tool is not None and planned.tool.name == "lookup"
    assert planned.finish_reason == "tool_calls"
    assert len(planned.pieces) > 2
    assert "".join(planned.pieces) == planned.tool.arguments
    assert set(json.loads(planned.tool.arguments)) == {"query", "count"}
    # Once the tool answered, the model replies in text.
    after = _chat(
        {"role": "user", "content": "find it [tool]"},
        {"role": "assistant", "content": None},  # type: ignore[dict-item]
        {"role": "tool", "content": "42"},
        tools=tools,
    )
    assert plan_chat(after, default_tokens=24, limit=None, echo_prefix=False).tool is None


def test_no_tool_call_without_marker_or_tools() -> None:
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    plain = _chat({"role": "user", "content": "find it"}, tools=tools)
    assert plan_chat(plain, default_tokens=4, limit=None, echo_prefix=False).tool is None
    no_tools = _chat({"role": "user", "content": "find it [tool]"})
    assert plan_chat(no_tools, default_tokens=4, limit=None, echo_prefix=False).tool is None


def test_completion_continuation_plan() -> None:
    prefix = full_answer("Once", 4)
    planned = plan_completion("Once" + prefix, default_tokens=12, limit=None, echo_prefix=False)
    assert prefix + planned.text == full_answer("Once", 12)


def test_correctness_rate_follows_quality() -> None:
    draws = [is_correct("prompt", "model", str(n), 0.3) for n in range(4000)]
    assert 0.27 < sum(draws) / len(draws) < 0.33
    assert is_correct("p", "m", None, 0.3) == is_correct("p", "m", None, 0.3)
    assert all(is_correct("p", "m", str(n), 1.0) for n in range(50))
    assert not any(is_correct("p", "m", str(n), 0.0) for n in range(50))
