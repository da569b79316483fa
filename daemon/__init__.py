"""recd's daemon floor: Kafka, Redis, HTTP, signals, the run loop and the CLI."""
