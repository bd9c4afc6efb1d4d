"""`python -m kebr_data` is `kebr-data`."""

from .cli import main

main()
