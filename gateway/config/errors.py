"""The one error a bad config raises: a single line naming the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    def __init__(self, file: Path | str | None, key: str, problem: str) -> None:
        self.file = str(file) if file is not None else "<config>"
        self.key = key
        self.problem = problem
        super().__init__(f"{self.file}: {key}: {problem}")
