"""`python -m medvl ...` is the same as the `medvl` console command (and works under torchrun)."""

from medvl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
