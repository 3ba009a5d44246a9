"""Task inference, difficulty and mode parsing: examples of the documented heuristic."""

from __future__ import annotations

import pytest

from gateway.config.models import Mode, Task
from gateway.routing.tasks import (
    SCAN_CHARS,
    difficulty_for,
    infer_task,
    parse_mode,
    parse_task_header,
)


def chat(text: str, system: str | None = None, **extra: object) -> dict[str, object]:
    messages: list[dict[str, object]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    return {"model": "auto", "messages": messages, **extra}


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Write a haiku about the sea.", Task.GENERATE),
        ("Summarise this article in three sentences.", Task.GENERATE),
        ("Write 3-4 sentences about cats.", Task.GENERATE),
        ("Fix this:\n```\nprint('hi'\n```", Task.CODE),
        ("def add(a, b): return a - b  -- why is this wrong?", Task.CODE),
        ("Write a Python function that reverses a list.", Task.CODE),
        ("My code does not compile, help.", Task.CODE),
        ("Prove that the square root of 2 is irrational.", Task.REASONING),
        ("Think step by step: how many weekdays are in March 2024?", Task.REASONING),
        ("What is 17 * 23 + 4?", Task.REASONING),
        ("Why is the sky blue?", Task.REASONING),
        ("Classify the sentiment of this review: great phone, awful battery.", Task.CLASSIFY),
        ("Which category fits this ticket: billing, bug, or feature?", Task.CLASSIFY),
        ("Is this spam? Answer with one word.", Task.CLASSIFY),
    ],
)
def test_chat_examples(text: str, task: Task) -> None:
    assert infer_task("chat", chat(text)).task is task


def test_tag_is_the_strongest_signal() -> None:
    assert infer_task("chat", chat("```code``` [task:classify]")).task is Task.CLASSIFY
    assert infer_task("chat", chat("hello [task:reasoning] [nonce:3]")).task is Task.REASONING
    assert infer_task("chat", chat("hi", system="[task:code]")).task is Task.CODE
    # An unknown tag name is no signal; the other rules decide.
    assert infer_task("chat", chat("Prove it [task:poetry]")).task is Task.REASONING


def test_embeddings_and_completions() -> None:
    assert infer_task("embeddings", {"input": "def f(): pass"}) == infer_task("embeddings", {})
    assert infer_task("embeddings", {}).task is Task.EMBED
    assert infer_task("completions", {"prompt": "def fib(n):"}).task is Task.CODE
    assert infer_task("completions", {"prompt": ["a", "Why?"]}).task is Task.REASONING
    assert infer_task("completions", {"prompt": [1, 2, 3]}).task is Task.GENERATE


def test_only_the_last_user_message_and_system_text_count() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Write a Python function to sort."},
            {"role": "assistant", "content": "def sort(xs): ..."},
            {"role": "user", "content": [{"type": "text", "text": "Now a poem about it."}]},
        ]
    }
    assert infer_task("chat", body).task is Task.GENERATE


def test_only_the_first_kilobytes_are_scanned() -> None:
    late_fence = "a" * (SCAN_CHARS + 10) + "```"
    assert infer_task("chat", chat(late_fence)).task is Task.GENERATE


def test_tools_and_schemas_add_difficulty_not_a_task() -> None:
    plain = infer_task("chat", chat("List three fruits."))
    tools = infer_task("chat", chat("List three fruits.", tools=[{"type": "function"}]))
    schema = infer_task("chat", chat("List three fruits.", response_format={"type": "json_schema"}))
    assert plain.task is tools.task is schema.task is Task.GENERATE
    assert tools.difficulty > plain.difficulty
    assert schema.difficulty == tools.difficulty


def test_forced_task_gets_its_own_difficulty() -> None:
    forced = infer_task("chat", chat("hello"), forced=Task.REASONING)
    assert forced.task is Task.REASONING
    assert forced.difficulty == difficulty_for(Task.REASONING, len("hello"))


def test_difficulty_grows_with_length_and_task() -> None:
    assert 0.0 <= difficulty_for(Task.CLASSIFY, 0) < difficulty_for(Task.GENERATE, 0)
    assert difficulty_for(Task.GENERATE, 0) < difficulty_for(Task.CODE, 0)
    assert difficulty_for(Task.CODE, 0) < difficulty_for(Task.REASONING, 0)
    lengths = [0, 100, 1_000, 10_000, 100_000]
    values = [difficulty_for(Task.GENERATE, n) for n in lengths]
    assert values == sorted(values)
    assert values[-1] == 1.0
    # Log-scaled: the first thousand characters move it more than the next nine thousand.
    assert values[2] - values[0] > values[3] - values[2]


def test_task_header() -> None:
    assert parse_task_header(" Code ") is Task.CODE
    assert parse_task_header("embed") is Task.EMBED
    assert parse_task_header("poetry") is None
    assert parse_task_header(None) is None


def test_mode() -> None:
    assert parse_mode("auto", None, Mode.AUTO) is Mode.AUTO
    assert parse_mode("auto", None, Mode.BEST) is Mode.BEST  # routing.default_mode
    assert parse_mode("auto:fast", None, Mode.AUTO) is Mode.FAST
    assert parse_mode("AUTO:best", None, Mode.AUTO) is Mode.BEST
    assert parse_mode("auto:fast", "best", Mode.AUTO) is Mode.BEST
    assert parse_mode("auto", " Fast ", Mode.AUTO) is Mode.FAST
    assert parse_mode("auto:best", "nonsense", Mode.AUTO) is Mode.BEST
    assert parse_mode("gpt-4o-mini", "best", Mode.AUTO) is None
    assert parse_mode("auto:cheap", None, Mode.AUTO) is None
