"""Fuzzing the decoder and the whole ingest path with generated malformed, adversarial and valid messages.

Over the decoder alone: the cases of tests/fuzzcases.py get exactly their expected reason or record, and
arbitrary JSON documents and bytes from hypothesis never raise anything but ``InvalidEvent``. Through the
real consumer, broker and Redis: every bad message is dead-lettered once with its reason, every good one
is applied as the reference model says, nothing crashes and the loop's memory stays flat.
(``python bench/fuzz.py`` runs the same at 100,000 messages.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import fuzz, make_cases
from daemon.runtime.settings import Settings
from schemas.events import (
    REASONS,
    InteractionEvent,
    InvalidEvent,
    Limits,
    ProfileEvent,
    decode_interaction,
    decode_profile,
)
from tests.corpus import NOW_MS, event
from tests.fuzzcases import PROFILES, Fuzzer

LIMITS = Limits()
CI_COUNT = 10_000


def decode(kind: str, raw: bytes) -> InteractionEvent | ProfileEvent:
    return decode_profile(raw, LIMITS, NOW_MS) if kind == PROFILES else decode_interaction(raw, LIMITS, NOW_MS)


@pytest.mark.parametrize("seed", [11, 12])
def test_each_generated_case_gets_its_reason_or_its_record(seed: int) -> None:
    for case in Fuzzer(seed, LIMITS, NOW_MS).cases(10_000):
        if case.good:
            record = decode(case.kind, case.raw or b"")
            assert record == case.record, case.label
            assert decode(case.kind, record.to_json()) == record, case.label
            continue
        with pytest.raises(InvalidEvent) as info:
            decode(case.kind, case.raw or b"")
        assert info.value.reason in case.reasons, (case.label, info.value.detail, (case.raw or b"")[:200])
        assert info.value.detail


# ----- arbitrary documents: never anything but InvalidEvent, and what is accepted round-trips

FIELDS = ("event_id", "user_id", "item_id", "type", "ts", "value", "context", "attributes")
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=300)
    | st.sampled_from(["view", "rating", "2025-06-15T10:00:00Z", "2025-06-15T10:00:00", "", " "])
    | st.integers(min_value=NOW_MS - 10**10, max_value=NOW_MS + 10**9)
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
documents = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), values, max_size=9)


def check_decoder(kind: str, raw: bytes) -> None:
    try:
        record = decode(kind, raw)
    except InvalidEvent as exc:
        assert exc.reason in REASONS and exc.detail
        return
    assert decode(kind, record.to_json()) == record


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, kind=st.sampled_from(["events", PROFILES]))
def test_arbitrary_documents_are_refused_with_a_reason_or_round_trip(doc: dict[str, Any], kind: str) -> None:
    check_decoder(kind, json.dumps(doc, allow_nan=True).encode())


@settings(max_examples=1500, deadline=None)
@given(raw=st.binary(max_size=400), kind=st.sampled_from(["events", PROFILES]))
def test_arbitrary_bytes_are_refused_with_a_reason(raw: bytes, kind: str) -> None:
    check_decoder(kind, raw)


@settings(max_examples=800, deadline=None)
@given(name=st.sampled_from(FIELDS), value=values)
def test_any_value_in_any_field_of_a_valid_event(name: str, value: Any) -> None:
    doc = json.loads(event(type="rating", value=4.0))
    doc[name] = value
    check_decoder("events", json.dumps(doc, allow_nan=True).encode())


# ----- the faults fuzzing found, kept as cases


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (event(type=["view"]), "unknown_type"),  # was TypeError: unhashable type
        (event(type={"view": 1}), "unknown_type"),
        (event(type="rating", value=10**400), "bad_value"),  # was OverflowError: int too large for a float
        (b'{"ts":' + b"1" * 5000 + b"}", "invalid_json"),  # was ValueError: more than 4,300 digits
        (event(user_id="\ud800"), "invalid_utf8"),  # was accepted, then crashed encoding the Redis key
        (event(context={"k": "\udfff"}), "invalid_utf8"),
        (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":' + b"9" * 25 + b"}", "bad_timestamp"),
    ],
    ids=["type-list", "type-object", "value-bigint", "digits", "surrogate-id", "surrogate-context", "ts-bigint"],
)
def test_fuzzing_findings_on_events(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_interaction(raw, LIMITS, NOW_MS)
    assert info.value.reason == reason, info.value.detail


def test_a_profile_with_null_attributes_is_refused_not_applied_as_empty() -> None:
    raw = json.dumps({"user_id": "u1", "attributes": None, "ts": NOW_MS}).encode()
    with pytest.raises(InvalidEvent) as info:
        decode_profile(raw, LIMITS, NOW_MS)
    assert (info.value.reason, info.value.field) == ("wrong_type", "attributes")


# ----- the whole path


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.single_redis
@pytest.mark.timeout(240)
def test_fuzzed_messages_through_the_real_ingest_loop(settings: Settings) -> None:
    run_settings = settings.replace(history_len=8)  # short histories: old events turn stale
    cases = make_cases(run_settings, CI_COUNT, seed=5)
    started = time.monotonic()
    report = fuzz(run_settings, cases, timeout_s=150)
    figures = report.figures
    assert report.faults == [], report.faults[:10]
    assert figures["count"] >= CI_COUNT and figures["crashes"] == 0
    assert figures["dlq"] == figures["bad"] == figures["invalid_metric"] > 3000
    assert figures["good"] > 3000 and figures["applied"] > 1000
    assert figures["rss_growth_mb"] < 64, figures  # flat: growth after the first tenth of the messages
    print(json.dumps({**figures, "seconds": round(time.monotonic() - started, 1)}))
