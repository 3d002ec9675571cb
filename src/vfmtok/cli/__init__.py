"""The command layer: the only package that knows argparse, printing and exit codes (one module per command)."""

from vfmtok.cli.main import COMMANDS, build_parser, main  # noqa: F401
