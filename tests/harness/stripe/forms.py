"""Stripe's form encoding read back: the bracket notation its SDK sends requests in."""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import parse_qsl

_KEY_PART = re.compile(r"\[([^\[\]]*)\]")


def _split_key(key: str) -> list[str]:
    # "line_items[0][price]" -> ["line_items", "0", "price"]; "expand[]" -> ["expand", ""]
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_KEY_PART.findall(key[len(head) :])]


def _listify(node: Any) -> Any:
    # Stripe's clients send arrays indexed (`a[0]`, `a[1]`): a dict whose keys are exactly
    # 0..n-1 was a list. (A metadata hash keyed "0", "1"... would read as a list too: no
    # caller of ours sends one.)
    if isinstance(node, list):
        return [_listify(value) for value in node]
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        indices = sorted(int(key) for key in items)
        if indices == list(range(len(indices))):
            return [items[str(index)] for index in indices]
    return items


def decode_form(body: str) -> dict[str, Any]:
    """Stripe's bracket notation (``metadata[clinic_id]=x``, ``items[0][price]=p``) to nested
    dicts and lists. Values stay strings: the wire has no types (``true``, ``1``)."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = _split_key(key)
        node = root
        for part, following in itertools.pairwise(parts):
            if following == "":  # `a[]=x`: an unindexed array, appended in order
                node = node.setdefault(part, [])
                break
            node = node.setdefault(part, {})
        if isinstance(node, list):
            node.append(value)
        else:
            node[parts[-1]] = value
    listed: dict[str, Any] = _listify(root)
    return listed
