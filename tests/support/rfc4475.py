"""RFC 4475's torture-test messages (``tests/fixtures/rfc4475``): the ``.dat`` files and the manifest
saying which are valid and what each must parse as."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES", "MANIFEST", "load"]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rfc4475"
MANIFEST: dict[str, dict[str, Any]] = tomllib.loads((FIXTURES / "manifest.toml").read_text("utf-8"))


def load(name: str) -> bytes:
    """The bytes of the message ``name`` (a manifest key)."""
    return (FIXTURES / f"{name}.dat").read_bytes()
