"""floorgate's demo kit: the simulated press line and an HTTP middleware receiver.

Installed apart from the agent (``pip install ./demo``, done by ``make demo`` and
``make test``): the agent's packages never import it."""
