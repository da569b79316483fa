"""Ingest: Kafka source -> decode (schemas) -> one atomic script per batch in Redis -> commit; bad input to
the dead-letter topic."""
