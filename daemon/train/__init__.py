"""Training in the daemon: when to fine-tune, the snapshot of histories from Redis, the quality gate,
publishing, and the model watch that hot-swaps what serving uses."""
