"""Make benchmark runs measure runtools as it runs when installed: from compiled bytecode.

An editable install under PYTHONDONTWRITEBYTECODE=1 (or with stale .pyc files) recompiles
every module of every process from source, which would measure the compiler, not runtools.
"""

from __future__ import annotations

import compileall
import os


def compile_runtools() -> None:
    """Write current .pyc files for the runtools, runcue and orchesjob packages."""
    import runtools

    src = os.path.dirname(os.path.dirname(runtools.__file__))
    for pkg in ("runtools", "runcue", "orchesjob"):
        path = os.path.join(src, pkg)
        if os.path.isdir(path):
            compileall.compile_dir(path, quiet=1)


def installed_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for child processes, as an installed tool sees it (bytecode may be used and written)."""
    out = dict(env)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out
