"""`python -m dermai …`, and the installed `dermai` command (`run`)."""

import sys


def run() -> int:
    """The command line, with Ctrl-C while numpy, pandas… load or while the arguments are parsed (before
    `cli.main` handles it) one line and exit 130, not a traceback: the installed command's wrapper would
    otherwise import `dermai.cli` outside any handler."""
    try:
        from dermai.cli import main

        return main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(run())
