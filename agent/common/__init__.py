"""Helpers every part shares, sources and destinations included: the strict config model
base, durations and sizes, secrets, and where state lives. Nothing here imports another
part of floorgate, so any module may import it."""
