"""Helpers for feeding a byte stream in arbitrary pieces."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar

from hypothesis import strategies as st

T = TypeVar("T")


def split_points(size: int) -> st.SearchStrategy[list[int]]:
    """Sorted, distinct cut positions inside a stream of ``size`` bytes."""
    if size < 2:
        return st.just([])
    return st.lists(st.integers(1, size - 1), unique=True, max_size=size).map(sorted)


def pieces(data: bytes, points: Sequence[int]) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def feed_in_pieces(feed: Callable[[bytes], list[T]], data: bytes, points: Sequence[int]) -> list[T]:
    out: list[T] = []
    for piece in pieces(data, points):
        out += feed(piece)
    return out


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]
