"""``python -m automl_dnn`` runs the CLI."""

from automl_dnn.cli import main

main()
