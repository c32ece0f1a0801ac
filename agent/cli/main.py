"""The floorgate command line: run, check-config, simulate, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from agent import __version__
from agent.cli import status as status_cli
from agent.cli.loading import DEFAULT_CONFIG, load_or_exit
from agent.common.secrets import SecretError
from agent.config.loader import EX_CONFIG
from agent.registry import command_modules
from agent.service.logs import setup_logging

EX_UNAVAILABLE = 69  # sysexits: a service the agent needs is unavailable


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config.describe import describe_config

    config = load_or_exit(args.config)
    print(f"{args.config}: configuration is valid\n")
    print(describe_config(config))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    from agent.service.run import serve  # the runtime loads only once the config is valid

    setup_logging(config.agent.log_level.value)
    try:
        asyncio.run(serve(args.config, config))
    except OSError as exc:  # e.g. the health port is taken, the state dir is not writable
        logging.getLogger("floorgate").error("cannot start: %s", exc)
        return EX_UNAVAILABLE
    except SecretError as exc:  # a secret file or credential named in the config is missing
        logging.getLogger("floorgate").error("cannot start: %s", exc)
        return EX_CONFIG
    return 0


DEMO_KIT_MISSING = (
    "floorgate {command} needs the demo kit, which the agent's package does not carry.\n"
    "Install it next to floorgate: pip install floorgate-demo (from a source tree: "
    "pip install ./demo, or run make demo)."
)


def demo_kit(command: str) -> ModuleType:
    """The demo kit (simulated line, receiver): installed apart from the agent."""
    try:
        return importlib.import_module("floorgate_demo")
    except ModuleNotFoundError as exc:
        if exc.name != "floorgate_demo":
            raise
        raise SystemExit(DEMO_KIT_MISSING.format(command=command)) from None


def cmd_simulate(args: argparse.Namespace) -> int:
    demo_kit("simulate")
    from floorgate_demo.simulator import SimulatedLine, serve_modbus_tcp

    setup_logging("info")
    print(
        f"simulated line (seed {args.seed}) serving Modbus TCP on {args.host}:{args.port};"
        " Ctrl-C stops"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_modbus_tcp(SimulatedLine(seed=args.seed), host=args.host, port=args.port))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    demo_kit("demo")
    from floorgate_demo.demo import run_demo

    config_path = args.config or _example_config()
    setup_logging("warning")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(config_path, state_dir=args.state_dir, seed=args.seed))
    return 0


def _example_config() -> Path:
    for candidate in (
        Path.cwd() / "config.example.yaml",
        Path(__file__).resolve().parent.parent / "config.example.yaml",
        Path(sys.prefix) / "share" / "floorgate" / "config.example.yaml",
    ):
        if candidate.is_file():
            return candidate
    raise SystemExit("config.example.yaml not found; pass --config PATH")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floorgate", description="Edge gateway agent for the plant floor."
    )
    parser.add_argument("--version", action="version", version=f"floorgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (the systemd service runs this)")
    run.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}"
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check-config", help="validate a config and show what the agent would do"
    )
    check.add_argument("config", type=Path)
    check.set_defaults(func=cmd_check_config)

    sim = sub.add_parser("simulate", help="run the simulated press line (Modbus TCP) on its own")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=5020)
    sim.add_argument("--seed", type=int, default=1)
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="simulated line + agent + HTTP receiver, with a live view")
    demo.add_argument("--config", type=Path, default=None, help="default: config.example.yaml")
    demo.add_argument("--state-dir", type=Path, default=Path(".floorgate-demo"))
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(func=cmd_demo)

    status_cli.register(sub, DEFAULT_CONFIG)

    # Command groups of their own modules (the plugins' from the registry); each imports
    # its protocol stack only when run.
    for module in ("agent.cli.buffer", *command_modules()):
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
