"""Destinations: the delivery loop every destination shares (loop, base, httpcall) and
one plugin folder per destination type (http/, mqtt/, odoo/), listed in agent.registry."""
