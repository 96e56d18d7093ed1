"""`python -m orchesjob` and the `orchesjob` console script."""

from runtools.cli.orchesjob import main

if __name__ == "__main__":
    main()
