"""Samples to events: the rule engine, the event model, routing to destinations."""
