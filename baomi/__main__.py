"""`python -m baomi` is the `baomi` command."""

from baomi.cli import main

main()
