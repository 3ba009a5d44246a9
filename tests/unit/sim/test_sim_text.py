"""Deterministic answers and continuation detection (gateway.sim.text)."""

from __future__ import annotations

from gateway.sim.text import (
    VOCABULARY,
    answer_tokens,
    chat_continuation,
    completion_continuation,
    content_text,
    full_answer,
    quoted_prefix,
    remaining_tokens,
    tags,
)


def test_full_answer_is_deterministic_and_prefix_stable() -> None:
    assert full_answer("hello", 10) == full_answer("hello", 10)
    assert full_answer("hello", 24).startswith(full_answer("hello", 10))
    assert full_answer("hello", 10) != full_answer("hello!", 10)
    tokens = answer_tokens("hello", 10)
    assert len(tokens) == 10
    assert all(t.startswith(" ") and t[1:] in VOCABULARY for t in tokens)
    assert full_answer("x", 0) == ""


def test_vocabulary_words_are_distinct_single_words() -> None:
    assert len(set(VOCABULARY)) == len(VOCABULARY) >= 64
    assert all(w.isalpha() and w.islower() for w in VOCABULARY)


def test_content_text_accepts_parts() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"text": "b"}]
    assert content_text(parts) == "ab"
    assert content_text("plain") == "plain"
    assert content_text(None) == ""


def test_tags() -> None:
    assert tags("do [task:code] now [nonce:42] [task:other]") == {"task": "code", "nonce": "42"}
    assert tags("nothing here") == {}


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_chat_fresh_request_has_no_prefix() -> None:
    messages = [{"role": "system", "content": "be brief"}, _user("question")]
    assert chat_continuation(messages, 24).prompt_key == "question"
    assert chat_continuation(messages, 24).prefix == ""


def test_chat_prefill_continuation() -> None:
    prefix = full_answer("question", 5)
    messages = [_user("question"), {"role": "assistant", "content": prefix}]
    assert chat_continuation(messages, 24).prefix == prefix
    # Without its leading space the prefix is still recognised.
    messages[-1]["content"] = prefix.lstrip()
    assert chat_continuation(messages, 24).prefix == prefix


def test_chat_prefill_that_does_not_match_is_a_fresh_answer() -> None:
    messages = [_user("question"), {"role": "assistant", "content": " not the answer"}]
    assert chat_continuation(messages, 24).prefix == ""


def test_chat_prefill_longer_than_the_configured_length() -> None:
    prefix = full_answer("question", 40)
    messages = [_user("question"), {"role": "assistant", "content": prefix}]
    assert chat_continuation(messages, 24).prefix == prefix


def test_chat_user_quote_continuation() -> None:
    sent = full_answer("question", 7)
    quote = f'Continue this answer exactly where it stops:\n"""{sent.lstrip()}"""'
    messages = [_user("question"), _user(quote)]
    continuation = chat_continuation(messages, 24)
    assert continuation.prompt_key == "question"
    assert continuation.prefix == sent


def test_chat_user_quote_with_assistant_turn_between() -> None:
    sent = full_answer("question", 3)
    messages = [_user("question"), {"role": "assistant", "content": sent}, _user(sent)]
    assert chat_continuation(messages, 24).prefix == sent


def test_quoted_prefix_is_the_longest_contained_word_prefix() -> None:
    tokens = answer_tokens("k", 10)
    text = "junk " + "".join(tokens[:6]) + " more junk"
    assert quoted_prefix(tokens, text) == "".join(tokens[:6])
    assert quoted_prefix(tokens, "nothing relevant") == ""


def test_completion_split_continuation() -> None:
    prompt = "Write a haiku about rivers:"
    prefix = full_answer(prompt, 6)
    continuation = completion_continuation(prompt + prefix, 24)
    assert continuation.prompt_key == prompt
    assert continuation.prefix == prefix


def test_completion_prompt_that_is_not_a_continuation() -> None:
    for prompt in ("Say hello", "Tell me about amber and cobalt", "one two three four five"):
        continuation = completion_continuation(prompt, 24)
        assert continuation.prompt_key == prompt and continuation.prefix == ""


def test_remaining_tokens_splits_inside_a_token() -> None:
    tokens = answer_tokens("k", 4)
    whole = "".join(tokens)
    cut = len(tokens[0]) + 2
    sent, rest = remaining_tokens(tokens, whole[:cut])
    assert "".join(sent) == whole[:cut]
    assert "".join(rest) == whole[cut:]
    assert remaining_tokens(tokens, "") == ([], tokens)
    assert remaining_tokens(tokens, whole) == (tokens, [])
