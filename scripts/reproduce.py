"""`hfr reproduce`, kept as a script for the commands in research/results (same options)."""

import sys

from hfr.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
