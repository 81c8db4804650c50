"""`python -m dermai …`"""

import sys

if __name__ == "__main__":
    try:  # Ctrl-C while numpy, pandas… load, or while the arguments are parsed: before main() handles it
        from dermai.cli import main

        code = main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    raise SystemExit(code)
