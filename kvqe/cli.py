"""``kvqe``: score, enhance and inspect bundles from the command line (see INTERFACE.md)."""
from __future__ import annotations

import click

from kvqe.commands.bundles import info, verify
from kvqe.commands.enhance import enhance
from kvqe.commands.evaluate import evaluate_bundle
from kvqe.commands.gate import gate_command
from kvqe.commands.report import report
from kvqe.commands.score import score
from kvqe.training.cli import distill


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvqe")
def main() -> None:
    """kvqe: no-reference video quality scoring and super-resolution."""


for command in (score, enhance, gate_command, info, verify, evaluate_bundle, report):
    main.add_command(command)
main.add_command(distill)  # lives with the training code; torch is imported only when it runs
