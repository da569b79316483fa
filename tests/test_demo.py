"""The README's first command, small: `recd demo` runs to completion and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_to_completion(broker: str, redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "RECD_KAFKA_BOOTSTRAP": broker, "RECD_REDIS_URL": redis_url, "RECD_LOG_LEVEL": "WARNING"}
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "demo", "--events", "6000", "--users", "300", "--items", "150",
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert text.count("source ann") >= 3, text  # three warm users' lists
    assert "with only a profile - source coldstart:" in text, text
    assert "items like the most popular one" in text, text
    assert "metrics: http://127.0.0.1:" in text
    assert (out / "embedding_map.png").stat().st_size > 10_000
    versions = list((out / "models" / "versions").iterdir())
    assert len(versions) == 1 and (versions[0] / "manifest.json").exists()
    assert "Traceback" not in proc.stderr
