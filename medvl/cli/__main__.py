"""`python -m medvl.cli ...` is the same as the `medvl` console command."""

from medvl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
