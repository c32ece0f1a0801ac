"""The command line: `floorgate run | check-config | status | buffer ...` (agent.cli.main).
Plugins add their own command groups (`floorgate opcua`, `floorgate odoo`)."""
