"""runtools: lightweight job coordination, monitoring and history for scripts and programs."""

__version__ = "0.1.0"
