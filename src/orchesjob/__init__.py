"""orchesjob: start-once runs for orchestrators, on the runtools core (see runtools.orchesjob)."""

__version__ = "1.1.0"
