"""Which task a request is, how hard it looks, and which routing mode it asked for.

Responsibility: a cheap, documented guess from the request body alone (no model call), so the
router can look up per-task statistics. Costs microseconds whatever the body size (about 5 us
for a one-line prompt, 20 us for a long one): only the first system message and the last user
message are read; the tag and code fences are looked for in their first SCAN_CHARS, keywords in
their first KEYWORD_CHARS, as plain substrings of the lowercased text (a large alternation regex
is ten times slower in CPython). Their full lengths still feed the difficulty.

Task rules, strongest first:
1. Endpoint `embeddings` is `embed`.
2. A literal tag `[task:<name>]` in the scanned text (the simulator's benchmarks tag their
   prompts this way) names the task outright.
3. A code fence (```) is `code`.
4. A labelling instruction ("classify", "label", "sentiment", "categorize", "which category",
   "answer with one word", ...) is `classify`: such prompts often quote code or numbers, and
   the instruction is what decides how hard the answer is.
5. Code words ("def ", "function", "compile", "stack trace", language names, ...) are `code`.
6. Reasoning words ("step by step", "prove", "why", "how many", ...), maths symbols or an
   arithmetic expression are `reasoning`.
7. Otherwise `generate`.
Tools and `response_format` JSON schemas do not pick a task: the benchmark categories fold
tool use into `generate`, and a schema says how to answer, not what about; they only add to
the difficulty, since well-formed structured output is harder than prose.

Difficulty in [0, 1]: a per-task base (reasoning and code are harder) plus the remaining span
times log-scaled prompt length, so 100 characters and 10,000 characters differ a lot while
10,000 and 12,000 barely do. `difficulty_for` is public so simulations use the same curve.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.config.models import Mode, Task

SCAN_CHARS = 4096  # where the tag and a code fence are looked for
KEYWORD_CHARS = 1024  # where instructions are: keyword rules read only this much
_MAX_PARTS = 64  # content parts read per message; a longer list is long whatever it holds

_TASK_BASE: Mapping[Task, float] = MappingProxyType(
    {
        Task.EMBED: 0.0,
        Task.CLASSIFY: 0.05,
        Task.GENERATE: 0.15,
        Task.CODE: 0.35,
        Task.REASONING: 0.4,
    }
)
# Prompt length (characters) at which the length term saturates.
_LONG_PROMPT_CHARS = 20_000.0
_LENGTH_UNIT_CHARS = 100.0
_STRUCTURED_BONUS = 0.1

_TAG = re.compile(r"\[task:\s*([a-z]+)\s*\]")
# Keywords are plain substrings of the lowercased text with a space in front, so " why" also
# matches at the start; substring search runs in C, a big alternation regex would not.
_CLASSIFY_WORDS = (
    "classify",
    "classification",
    "categorize",
    "categorise",
    "label the",
    "label this",
    "label each",
    "sentiment",
    "which category",
    "one of the labels",
    "one of the categories",
    "answer with one word",
    "answer with a single word",
    "positive or negative",
    "positive, negative",
    "negative or neutral",
    "is this spam",
)
_CODE_WORDS = (
    "def ",
    "function",
    "compile",
    "stack trace",
    "stacktrace",
    "traceback",
    " regex",
    "refactor",
    "unit test",
    "segfault",
    "#include",
    "import ",
    " class ",
    " python",
    "javascript",
    "typescript",
    " java ",
    " java,",
    " java.",
    " rust ",
    " rust,",
    " golang",
    " kotlin",
    "c++",
    " c#",
    " sql",
    " bash",
    " haskell",
    " php",
)
_REASONING_WORDS = (
    "step by step",
    "step-by-step",
    " prove",
    " proof",
    "theorem",
    " why",
    "how many",
    " solve",
    "calculate",
    " derive",
    "deduce",
    "probability",
    "logic puzzle",
    "≤",
    "≥",
    "≠",
    "∑",
    "∫",
    "√",
    "π",
)
_OPERATORS = "+*/^×÷=-"
# An arithmetic expression; a bare hyphen needs spaces so "3-4 sentences" stays prose.
_ARITHMETIC = re.compile(r"\d\s*[+*/^×÷=]\s*\d|\d\s+-\s+\d")
_TASKS_BY_NAME: Mapping[str, Task] = MappingProxyType({t.value: t for t in Task})
_MODE_ALIASES: Mapping[str, Mode] = MappingProxyType(
    {"auto:fast": Mode.FAST, "auto:best": Mode.BEST}
)
_MODE_HEADER: Mapping[str, Mode] = MappingProxyType({m.value: m for m in Mode})


@dataclass(frozen=True, slots=True)
class TaskEstimate:
    task: Task
    difficulty: float


def difficulty_for(task: Task, prompt_chars: int, structured: bool = False) -> float:
    """Base of the task plus its remaining span times log-scaled length, capped at 1."""
    base = _TASK_BASE[task]
    length = math.log1p(prompt_chars / _LENGTH_UNIT_CHARS) / math.log1p(
        _LONG_PROMPT_CHARS / _LENGTH_UNIT_CHARS
    )
    value = base + (1.0 - base) * min(1.0, length)
    if structured:
        value += _STRUCTURED_BONUS
    return min(1.0, value)


def _text_of(content: object) -> tuple[str, int]:
    """(the first SCAN_CHARS of the text, its full length) of a message content: a string,
    or the text parts of a content-part list. Never copies more than SCAN_CHARS."""
    if isinstance(content, str):
        return content[:SCAN_CHARS], len(content)
    if not isinstance(content, list):
        return "", 0
    head: list[str] = []
    kept = length = 0
    for part in content[:_MAX_PARTS]:
        text = part.get("text") if isinstance(part, dict) else None
        if isinstance(text, str):
            length += len(text)
            if kept < SCAN_CHARS:
                head.append(text[: SCAN_CHARS - kept])
                kept += len(head[-1])
    return "\n".join(head), length


_EMPTY = ("", 0)


def _chat_texts(body: Mapping[str, object]) -> tuple[tuple[str, int], tuple[str, int]]:
    """(system, last user) as (scanned text, full length); scans the history from the end, so
    a long conversation costs nothing."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _EMPTY, _EMPTY
    first = messages[0]
    system = _EMPTY
    if isinstance(first, dict) and first.get("role") in ("system", "developer"):
        system = _text_of(first.get("content"))
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return system, _text_of(message.get("content"))
    return system, _EMPTY


def _prompt_text(body: Mapping[str, object]) -> tuple[str, int]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt:
        prompt = prompt[-1]
    if isinstance(prompt, str):
        return prompt[:SCAN_CHARS], len(prompt)
    return _EMPTY  # token-id prompts carry no text to read


def _is_structured(body: Mapping[str, object]) -> bool:
    if body.get("tools") or body.get("functions"):
        return True
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")


def _contains(text: str, words: tuple[str, ...]) -> bool:
    for word in words:
        if word in text:
            return True
    return False


def _classify_text(text: str) -> Task:
    low = " " + text.lower()
    if "[task:" in low:
        tag = _TAG.search(low)
        tagged = _TASKS_BY_NAME.get(tag.group(1)) if tag is not None else None
        if tagged is not None:
            return tagged
    if "```" in low:
        return Task.CODE
    head = low[: KEYWORD_CHARS + 1]
    if _contains(head, _CLASSIFY_WORDS):
        return Task.CLASSIFY
    if _contains(head, _CODE_WORDS):
        return Task.CODE
    if _contains(head, _REASONING_WORDS):
        return Task.REASONING
    if any(op in head for op in _OPERATORS) and _ARITHMETIC.search(head):
        return Task.REASONING
    return Task.GENERATE


def infer_task(
    endpoint: str, body: Mapping[str, object], forced: Task | None = None
) -> TaskEstimate:
    """Guess the task and difficulty of a request to `endpoint` (chat|completions|embeddings).
    `forced` (from `X-Gateway-Task`) fixes the task; the difficulty is then that task's."""
    if endpoint == "embeddings":
        return TaskEstimate(Task.EMBED, 0.0)
    if endpoint == "chat":
        (system, system_len), (user, user_len) = _chat_texts(body)
    else:
        (system, system_len), (user, user_len) = _EMPTY, _prompt_text(body)
    # The user's own words carry the instruction; the system text may hold the tag.
    task = forced or _classify_text(user + "\n" + system if system else user)
    return TaskEstimate(task, difficulty_for(task, system_len + user_len, _is_structured(body)))


def parse_task_header(value: str | None) -> Task | None:
    """`X-Gateway-Task`: a task name (any case, spaces ignored), else None."""
    if value is None:
        return None
    return _TASKS_BY_NAME.get(value.strip().lower())


def parse_mode(model_field: str, header: str | None, default: Mode = Mode.AUTO) -> Mode | None:
    """The routing mode of a request, or None when `model` names a model explicitly.

    `auto:fast` is FAST and `auto:best` is BEST; the bare alias `auto` is `default`, which the
    caller passes from `routing.default_mode` (AUTO unless configured otherwise, so that key
    means something). A valid `X-Gateway-Mode` (auto|fast|best) overrides the alias; an
    unknown header value is ignored rather than failing the request. The header never turns an
    explicit model id into a routed request: the contract says that model serves it.
    """
    name = model_field.strip().lower()
    if name == "auto":
        mode = default
    else:
        alias = _MODE_ALIASES.get(name)
        if alias is None:
            return None
        mode = alias
    if header is not None:
        mode = _MODE_HEADER.get(header.strip().lower(), mode)
    return mode
