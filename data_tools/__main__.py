"""Entry point of the data tools: ``python -m data_tools <command> [options]``.

Commands are listed explicitly in ``COMMANDS``. Each names a module that provides ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``; the module docstring becomes the
command's ``--help`` description.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "synthref": "data_tools.synthref",
    "prepare": "data_tools.prepare",
    "refcocog": "data_tools.refcocog",
    "reallod": "data_tools.reallod",
    "inspect": "data_tools.inspect_data",
    "visualize": "data_tools.visualize",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_tools", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(
            name, help=module.HELP, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
