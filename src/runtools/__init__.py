"""runtools: lightweight job coordination, monitoring and history for scripts and programs.

The public API is loaded on first use, so `import runtools` stays free for the CLIs:
`runtools.run`, `runtools.environment`, `runtools.JobSpec`, `runtools.RunQuery`,
`runtools.RunRecord`, `runtools.Status`, `runtools.Stage`, `runtools.State`.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "run": ("runtools.api", "run"),
    "environment": ("runtools.api", "environment"),
    "JobSpec": ("runtools.job.spec", "JobSpec"),
    "RunResult": ("runtools.job.instance", "RunResult"),
    "RunQuery": ("runtools.env.base", "RunQuery"),
    "RunRecord": ("runtools.model.run", "RunRecord"),
    "RunMatcher": ("runtools.model.criteria", "RunMatcher"),
    "Status": ("runtools.model.status", "Status"),
    "Stage": ("runtools.model.status", "Stage"),
    "State": ("runtools.model.status", "State"),
    "Outcome": ("runtools.model.status", "Outcome"),
    "RuntoolsError": ("runtools.errors", "RuntoolsError"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'runtools' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
