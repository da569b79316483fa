"""Decoding and validation of events: each fault gets its precise reason."""

from __future__ import annotations

import json

import pytest

from schemas.events import REASONS, InvalidEvent, Limits, decode_interaction, decode_profile
from tests.corpus import BAD_EVENTS, BAD_PROFILES, NOW_MS, event

LIMITS = Limits()


def test_valid_event_round_trips() -> None:
    raw = event(type="rating", value=4.5, context={"page": "home"})
    ev = decode_interaction(raw, LIMITS, NOW_MS)
    assert (ev.event_id, ev.user_id, ev.item_id, ev.type, ev.ts, ev.value) == ("e1", "u1", "i1", "rating", NOW_MS, 4.5)
    assert ev.context == {"page": "home"}
    assert decode_interaction(ev.to_json(), LIMITS, NOW_MS) == ev


def test_rfc3339_timestamps_become_epoch_ms() -> None:
    ev = decode_interaction(event(ts="2025-06-15T16:26:40.5Z"), LIMITS, NOW_MS)
    assert ev.ts == 1_750_004_800_500
    ev2 = decode_interaction(event(ts="2025-06-15T18:26:40.5+02:00"), LIMITS, NOW_MS)
    assert ev2.ts == ev.ts


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = json.dumps({**json.loads(event()), "new_field": {"x": 1}}).encode()
    assert decode_interaction(raw, LIMITS, NOW_MS).item_id == "i1"


@pytest.mark.parametrize(("name", "raw", "reason"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_bad_event_reason(name: str, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_interaction(raw, LIMITS, NOW_MS)
    assert info.value.reason == reason, info.value.detail
    assert info.value.reason in REASONS
    assert info.value.detail


@pytest.mark.parametrize(("name", "raw", "reason"), BAD_PROFILES, ids=[b[0] for b in BAD_PROFILES])
def test_bad_profile_reason(name: str, raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_profile(raw, LIMITS, NOW_MS)
    assert info.value.reason == reason, info.value.detail


def test_detail_names_the_field() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_interaction(event(user_id=7), LIMITS, NOW_MS)
    assert info.value.field == "user_id"
    assert "'user_id' must be a string, got int" in info.value.detail


def test_future_skew_follows_limits() -> None:
    raw = event(ts=NOW_MS + 3_600_000)
    assert decode_interaction(raw, LIMITS, NOW_MS).ts == NOW_MS + 3_600_000
    with pytest.raises(InvalidEvent, match="future"):
        decode_interaction(raw, Limits(max_future_ms=1000), NOW_MS)


def test_profile_decodes() -> None:
    raw = json.dumps({"user_id": "u9", "attributes": {"country": "US"}, "ts": NOW_MS}).encode()
    prof = decode_profile(raw, LIMITS, NOW_MS)
    assert prof.user_id == "u9" and prof.attributes == {"country": "US"} and prof.ts == NOW_MS
