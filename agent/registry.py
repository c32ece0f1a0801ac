"""Every source and destination type, one line per plugin.

A plugin is a package that exports:

- ``CONFIGS``: its config models; each has a ``type: Literal[...]`` field, the value
  written in the YAML;
- ``create(config, agent)``: the driver or forwarder for one configured item (it imports
  the protocol stack, so a type that is not configured costs nothing);
- ``COMMANDS``: the module of its command group (``register(subparsers)``), or None.

Adding a type is a new folder and one line below."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config.models import AgentSection
    from agent.forwarders.base import Forwarder
    from drivers.base import Driver

SOURCE_PLUGINS = (
    "drivers.modbus",
    "drivers.opcua",
)

DESTINATION_PLUGINS = (
    "agent.forwarders.http",
    "agent.forwarders.mqtt",
    "agent.forwarders.odoo",
)


def plugins(names: tuple[str, ...]) -> Iterator[ModuleType]:
    for name in names:
        yield importlib.import_module(name)


def config_models(names: tuple[str, ...]) -> tuple[type[Any], ...]:
    return tuple(model for plugin in plugins(names) for model in plugin.CONFIGS)


@cache
def _by_type(names: tuple[str, ...]) -> dict[str, ModuleType]:
    return {
        model.model_fields["type"].annotation.__args__[0]: plugin
        for plugin in plugins(names)
        for model in plugin.CONFIGS
    }


def make_driver(config: Any, agent: AgentSection) -> Driver:
    driver: Driver = _by_type(SOURCE_PLUGINS)[config.type].create(config, agent)
    return driver


def make_forwarder(config: Any, agent: AgentSection) -> Forwarder:
    forwarder: Forwarder = _by_type(DESTINATION_PLUGINS)[config.type].create(config, agent)
    return forwarder


def command_modules() -> Iterator[str]:
    for plugin in plugins(SOURCE_PLUGINS + DESTINATION_PLUGINS):
        if plugin.COMMANDS:
            yield plugin.COMMANDS
