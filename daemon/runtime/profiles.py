"""Profile segments: the one owner of how a profile's attributes make cold-start segments.

ingest.lua builds the same chain from the stored profile when it counts segment popularity (checked
against ``segment_chain`` by tests/test_store.py).
"""

from __future__ import annotations

from collections.abc import Mapping


def segment_chain(attributes: Mapping[str, str], keys: tuple[str, ...]) -> list[str]:
    """Cold-start segments of a profile, coarsest first: 'country=US', 'country=US|age_band=25-34', ...

    The chain stops at the first attribute the profile lacks. ingest.lua builds the same
    chain from the stored profile when it counts segment popularity."""
    chain: list[str] = []
    parts: list[str] = []
    for key in keys:
        val = attributes.get(key)
        if not val:
            break
        parts.append(f"{key}={val.replace('|', '/').replace(chr(10), ' ')}")
        chain.append("|".join(parts))
    return chain


def finest_segment(attributes: Mapping[str, str], keys: tuple[str, ...]) -> str:
    """The most specific segment of a profile ('' when it has none): where ingest counts its events."""
    chain = segment_chain(attributes, keys)
    return chain[-1] if chain else ""
