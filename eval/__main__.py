"""`python -m eval ...`: every evaluation of pdae-bench as a sub-command."""

from eval.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
