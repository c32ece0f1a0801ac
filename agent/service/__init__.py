"""The agent as a long-running service: wiring, supervision, signals, systemd, logging."""
