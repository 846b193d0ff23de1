"""The value types and checks that scenario fields share: names, sizes, lists, numbers."""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

from pydantic import BeforeValidator

T = TypeVar("T")

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SIZE_RE = re.compile(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)
SIZE_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~/?&=%+-]{0,200}$")


def matching(value: str | None, pattern: re.Pattern[str], what: str) -> str | None:
    """`value` when unset or matching `pattern`; else a ValueError saying it is not `what`."""
    if value is not None and not pattern.match(value):
        raise ValueError(f"{value!r} is not {what}")
    return value


def parse_size_bytes(value: int | str) -> int:
    """Parse 268435456, "256m", "256MiB" or "1g" to bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '256m'")
    if isinstance(value, int):
        size = value
    else:
        match = SIZE_RE.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a size; write bytes or e.g. '256m', '1g'")
        size = int(match.group(1)) * SIZE_FACTORS[match.group(2).lower()]
    if size <= 0:
        raise ValueError("a size must be positive")
    return size


def unique_entries(values: list[T]) -> list[T]:
    if len(set(values)) != len(values):
        raise ValueError("list each entry once")
    return values


def _int_as_float(value: object) -> object:
    # TOML writes 1 and 1.0 differently; both mean the same number, and strict mode refuses
    # an int where a float is declared.
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


Float = Annotated[float, BeforeValidator(_int_as_float)]
"""A float field that also takes a TOML integer."""
