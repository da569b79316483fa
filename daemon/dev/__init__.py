"""Development tooling, never imported by the running daemon: the demo, synthetic and dataset producers,
the embedded broker and Redis, ``recd dev up``."""
