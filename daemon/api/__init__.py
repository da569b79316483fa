"""The HTTP face: lookups for applications, health, readiness, /metrics."""
