"""What central monitoring sees: the health report, /healthz, /readyz, /metrics, status."""
