"""`python -m pdae ...` is the `pdae` console script."""

from pdae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
