"""The one error every configuration check raises, in its own module so that settings checked by a
behaviour layer (e.g. :mod:`edgeproxy.federation.settings`) need not import the glue that reads files."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value cannot be used.

    ``key`` is the dotted key (``registrar.min_expires``), or the file name when the file itself is
    the problem; ``problem`` says what is wrong. ``str()`` is always a single line.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = " ".join(problem.split())
        super().__init__(f"config: {key}: {self.problem}")
