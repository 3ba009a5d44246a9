"""Deterministic answer text and the detection of continuation requests (pure functions).

The answer to a prompt is a function of the prompt only, never of the model: token i of the
answer to `prompt_key` is a vocabulary word picked by a hash of (prompt_key, i). So the first
j tokens of a longer answer are the whole of a shorter one, and a continuation served by a
different model or simulator lines up with the prefix already sent.

A continuation request is recognised in three forms (the gateway's two, plus legacy
completions): a trailing assistant message holding the prefix (prefill), a later user message
quoting the prefix, and a completions prompt that ends with the prefix. Vocabulary words are
deliberately unusual so that ordinary prompts are not mistaken for continuations.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

VOCABULARY = tuple(
    """
    amber basalt cobalt dune ember fjord garnet heron indigo jasper kelp lagoon magma
    nectar onyx pebble quartz russet saffron tundra umber velvet willow xenon yarrow
    zephyr alder bramble cinder delta egret fennel glacier hazel iris juniper kestrel
    lichen marble nimbus opal prairie quill raven sable thistle ultramarine vervain wren
    yew zinnia acorn birch canyon driftwood estuary fern granite harbor islet jade knoll
    lupine meadow nutmeg orchid pumice quarry reef sorrel topaz upland vale wisteria yucca
    zircon anise bluff coral dahlia eddy flint gorse hollow ivy jetty kiln larch mica
    nettle ochre peony quince rowan sequoia tamarind urchin verbena walnut yonder zest
    alpine beryl cirrus dogwood elm foxglove gypsum hemlock ironwood jonquil kale linden
    mangrove nacre oxbow plume quoll rill shale tern umbra vetch wadi yarn zenith aster
    bayou cairn
    """.split()
)

_TAG = re.compile(r"\[(task|nonce):([^\]\s]+)\]")
TOOL_MARKER = "[tool]"


def _hash_int(*parts: str) -> int:
    # blake2b rather than hash(): the answer must be the same in every process and run.
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def answer_tokens(prompt_key: str, n_tokens: int) -> list[str]:
    """The first `n_tokens` tokens of the answer to `prompt_key`, each ' word'."""
    return [
        " " + VOCABULARY[_hash_int(prompt_key, str(i)) % len(VOCABULARY)] for i in range(n_tokens)
    ]


def full_answer(prompt_key: str, n_tokens: int) -> str:
    """The answer text of `n_tokens` tokens; a prefix of every longer answer to the same key."""
    return "".join(answer_tokens(prompt_key, n_tokens))


def unit_hash(*parts: str) -> float:
    """A deterministic number in [0, 1) for the given parts."""
    return _hash_int(*parts) / 2.0**64


def estimate_tokens(text: str) -> int:
    """The usual 4-characters-a-token estimate (never 0 for a non-empty text)."""
    return math.ceil(len(text) / 4)


def content_text(content: Any) -> str:
    """The text of a message's `content`: a string or the concatenated text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def tags(text: str) -> dict[str, str]:
    """`[task:<name>]` and `[nonce:<n>]` tags in a prompt (the first of each wins)."""
    found: dict[str, str] = {}
    for kind, value in _TAG.findall(text):
        found.setdefault(kind, value)
    return found


@dataclass(frozen=True)
class Continuation:
    """How a request relates to the deterministic answer.

    `prompt_key` keys the answer; `prefix` is the part of the answer the client already has
    ("" for a fresh request). `prefix` is always a prefix of `full_answer(prompt_key, ...)`.
    """

    prompt_key: str
    prefix: str = ""


def first_user_text(messages: Sequence[Any]) -> tuple[int, str]:
    """Index and text of the first user message (-1, "" if there is none)."""
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return i, content_text(message.get("content"))
    return -1, ""


def _as_prefix(answer: str, candidate: str) -> str | None:
    """`candidate` as a prefix of `answer`, tolerating a missing leading space."""
    if answer.startswith(candidate):
        return candidate
    if candidate and not candidate.startswith(" ") and answer.startswith(" " + candidate):
        return " " + candidate
    return None


def chat_continuation(messages: Sequence[Any], n_tokens: int) -> Continuation:
    """Recognise a chat continuation: trailing assistant prefill or a later user quote."""
    first, key = first_user_text(messages)
    if first < 0 or not messages:
        return Continuation(key)
    last = messages[-1]
    if not isinstance(last, dict):
        return Continuation(key)
    text = content_text(last.get("content"))
    # Detection looks as far as the client's text reaches, so a prefix longer than this
    # simulator's answer length (another simulator configured differently) is still found.
    n_detect = max(n_tokens, text.count(" ") + 1)
    if last.get("role") == "assistant":
        prefix = _as_prefix(full_answer(key, n_detect), text)
        return Continuation(key, prefix or "")
    if last.get("role") == "user" and len(messages) - 1 != first:
        return Continuation(key, quoted_prefix(answer_tokens(key, n_detect), text))
    return Continuation(key)


def quoted_prefix(tokens: Sequence[str], text: str) -> str:
    """The longest word-prefix of the answer that appears verbatim inside `text`.

    Containment is monotone (a shorter prefix of a contained prefix is contained too), so a
    binary search finds the longest. The leading space is not required: quotes often drop it.
    """
    lo, hi = 0, len(tokens)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if "".join(tokens[:mid]).lstrip() in text:
            lo = mid
        else:
            hi = mid - 1
    return "".join(tokens[:lo])


def completion_continuation(prompt: str, n_tokens: int, max_back: int = 200) -> Continuation:
    """Recognise a completions prompt that ends with the start of its own answer.

    Candidate split points are the spaces of the prompt's last `max_back` words. The farthest
    one back is tried first: a longer suffix that matches the answer is much less likely to be
    a coincidence than a one-word one (a chance match of one word has odds 1/len(VOCABULARY)).
    """
    splits: list[int] = []
    pos = len(prompt)
    while len(splits) < max_back:
        pos = prompt.rfind(" ", 0, pos)
        if pos <= 0:
            break
        splits.append(pos)
    for split in reversed(splits):
        key, suffix = prompt[:split], prompt[split:]
        if full_answer(key, max(n_tokens, suffix.count(" "))).startswith(suffix):
            return Continuation(key, suffix)
    return Continuation(prompt)


def remaining_tokens(tokens: Sequence[str], prefix: str) -> tuple[list[str], list[str]]:
    """Split the answer's tokens at `prefix` into (already sent, still to send).

    A prefix that ends inside a token splits that token, so the concatenation is exact.
    """
    sent: list[str] = []
    used = 0
    for i, token in enumerate(tokens):
        if used >= len(prefix):
            return sent, list(tokens[i:])
        take = len(prefix) - used
        if take >= len(token):
            sent.append(token)
            used += len(token)
        else:
            return sent + [token[:take]], [token[take:], *tokens[i + 1 :]]
    return sent, []


def tool_arguments(prompt_key: str) -> str:
    """Deterministic JSON arguments of a simulated tool call."""
    words = answer_tokens("tool\x1f" + prompt_key, 3)
    query = "".join(words).strip()
    count = 1 + _hash_int("tool-count", prompt_key) % 9
    return '{"query": "' + query + '", "count": ' + str(count) + "}"


def split_pieces(text: str, size: int = 6) -> list[str]:
    """`text` cut into pieces of `size` characters (tool-call argument deltas)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
