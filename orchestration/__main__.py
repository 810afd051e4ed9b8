"""``python -m orchestration`` runs the ``orchestrate`` CLI."""

from orchestration.cli.app import main

main()
