"""The floorgate command line: run, check-config, simulate, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import select
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from agent import __version__
from agent.cli import status as status_cli
from agent.cli.loading import DEFAULT_CONFIG, load_expanded_or_exit, load_or_exit
from agent.common.secrets import SecretError
from agent.config.loader import EX_CONFIG
from agent.registry import command_modules
from agent.service.logs import setup_logging

EX_UNAVAILABLE = 69  # sysexits: a service the agent needs is unavailable
EX_DATAERR = 65  # sysexits: the input file is not what it should be


def write_out(text: str) -> None:
    """``text`` to stdout, in pieces smaller than its buffer: a reader that goes away
    (`| head`) then always shows as BrokenPipeError (see main), where one large write
    cut short would have its rest dropped by Python without a word."""
    for start in range(0, len(text), 4096):
        sys.stdout.write(text[start : start + 4096])


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.config.describe import describe_config, expanded_yaml

    loaded = load_expanded_or_exit(args.config)
    if args.expanded:
        write_out(expanded_yaml(loaded.expansion.data))
        return 0
    write_out(f"{args.config}: configuration is valid\n\n")
    write_out(describe_config(loaded.config, loaded.expansion.uses) + "\n")
    return 0


def cmd_import_csv(args: argparse.Namespace) -> int:
    """Print a template made from a Kepware or TIA Portal tag export. Exit 0 when every
    row became a signal, 1 when some were refused (listed on stderr; the others are
    printed), 65 when the file cannot be used or no row could."""
    from agent.config.csvimport import CsvImportError, read_tag_export, template_yaml

    try:
        result = read_tag_export(
            args.file, base_address=args.base_address, mb_hold_reg=args.mb_hold_reg, swap=args.swap
        )
    except CsvImportError as exc:
        print(f"floorgate import-csv: {exc}", file=sys.stderr)
        return EX_DATAERR
    for row in result.refused:
        print(f"not imported: {row.render(str(args.file))}", file=sys.stderr)
    if not result.signals:
        print(f"floorgate import-csv: no row of {args.file} could be imported", file=sys.stderr)
        return EX_DATAERR
    options = [f"--template {args.template}"]
    options += [f"--base-address {args.base_address}"] * bool(args.base_address)
    options += [f"--mb-hold-reg {args.mb_hold_reg}"] * bool(args.mb_hold_reg)
    options += [f"--swap {args.swap}"] * (args.swap != "none")
    command = f"floorgate import-csv {args.file.name} {' '.join(options)}"
    write_out(template_yaml(result, args.template, command=command))
    return 1 if result.refused else 0


def _template_name(text: str) -> str:
    import re

    from agent.common.model import NAME_PATTERN

    if not re.match(NAME_PATTERN, text):
        raise argparse.ArgumentTypeError("letters, digits, _ and - only")
    return text


def _address(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("a Modbus address, 0-65535")
    return int(text)


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
    check.add_argument(
        "--expanded",
        action="store_true",
        help="print the config with every template expanded (plain YAML) instead",
    )
    check.set_defaults(func=cmd_check_config)

    imp = sub.add_parser(
        "import-csv",
        help="print a machine template made from a Kepware or TIA Portal tag export (CSV)",
        description="Read a Kepware CSV export or a TIA Portal PLC tag table saved as CSV and "
        "print its tags as the signals of a template, to paste into config.yaml. Rows that "
        "do not map to Modbus are listed on stderr with the reason.",
    )
    imp.add_argument("file", type=Path, help="the CSV file")
    imp.add_argument(
        "--template", required=True, type=_template_name, help="the template's name, e.g. press"
    )
    imp.add_argument(
        "--base-address",
        type=_address,
        default=0,
        metavar="N",
        help="subtract N from every address, to make them offsets from the machine's base",
    )
    imp.add_argument(
        "--mb-hold-reg",
        metavar="AREA",
        help="S7 tags: where MB_SERVER's holding registers start (MB_HOLD_REG), e.g. MW100 "
        "or DB10; %%M and %%DB tags are read from there",
    )
    imp.add_argument(
        "--swap",
        choices=("none", "byte", "word", "word_byte"),
        default="none",
        help="the device's byte and word order for 32- and 64-bit values (Kepware keeps it "
        "in the device's settings, not in the export)",
    )
    imp.set_defaults(func=cmd_import_csv)

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


# What a shell reports for a command ended by SIGPIPE (128 + 13), as for `cat` or `grep`
# whose reader went away: `floorgate check-config --expanded x | head` fails under
# `set -o pipefail` exactly as `cat big.yaml | head` does, and never claims to have
# written everything.
EXIT_STDOUT_CLOSED = 128 + signal.SIGPIPE


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll says POLLERR for it)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced or closed by the caller
        return False
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # what is still buffered meets a closed pipe here, not at exit
    except BrokenPipeError:
        # Python ignores SIGPIPE, so a write to a pipe whose reader is gone (`| head`)
        # raises. End quietly like any Unix tool, unless the broken pipe is another one
        # (a socket): that is an error worth its traceback.
        if not _stdout_closed():
            raise
        # What stays buffered goes nowhere, so the flush at exit raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_STDOUT_CLOSED
    return code


if __name__ == "__main__":
    raise SystemExit(main())
