"""What every role shares: settings, Redis key names and value formats, metrics, the step()/shutdown()
service loop, the wiring of roles and the ``recd`` command line."""
