"""``python -m jobs`` runs the qtrust command line."""

from jobs.cli import main

main()
