"""`python -m dragonclf ...`: see dragonclf/cli/."""

from dragonclf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
