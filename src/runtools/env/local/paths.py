"""Where a local environment lives: its directory (state) and its runtime dir (sockets)."""

from __future__ import annotations

import os
from _blake2 import blake2b  # hashlib would load OpenSSL: milliseconds on every run

from runtools.errors import BackendError, UsageError


def runtools_home() -> str:
    home = os.environ.get("RUNTOOLS_HOME")
    if home:
        return home
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "runtools")


def env_dir(name: str) -> str:
    """A name containing `/` is a directory; any other name lives under $RUNTOOLS_HOME."""
    if "/" in name:
        return os.path.abspath(os.path.expanduser(name))
    from runtools.model.ids import validate_id

    validate_id(name, "environment name")
    return os.path.join(runtools_home(), name)


def ensure_private_dir(path: str) -> str:
    """Create `path` (and parents) readable only by its owner."""
    try:
        _makedirs_private(path)
    except FileExistsError:
        raise UsageError(f"{path} exists and is not a directory: choose another environment path") from None
    except OSError as e:
        from runtools.env.local.store import storage_error

        raise storage_error(e, path) from None
    return path


def _makedirs_private(path: str) -> None:
    """`os.makedirs` gives only the last directory the mode; here every created level is 0700."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _makedirs_private(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


SOCKET_PATH_MAX = 107  # bytes of a Unix socket path (sun_path) on Linux, without its NUL


def runtime_dir(state_dir: str) -> str:
    """Short per-environment dir for Unix sockets (paths are limited to ~107 bytes)."""
    digest = blake2b(os.path.realpath(state_dir).encode(), digest_size=6).hexdigest()
    base = os.environ.get("XDG_RUNTIME_DIR")
    # <base>/runtools/<digest>/c/<16 hex>: a base too long for a socket path falls back too
    if (not base or len(base) > SOCKET_PATH_MAX - 40 or not os.path.isdir(base)
            or not os.access(base, os.W_OK)):
        base = f"/tmp/runtools-{os.getuid()}"
        ensure_private_dir(base)
        st = os.lstat(base)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise BackendError(f"{base} is not private to you: remove it or set XDG_RUNTIME_DIR")
    else:
        base = os.path.join(base, "runtools")
    return ensure_private_dir(os.path.join(base, digest))


def short_name(instance_id: str) -> str:
    return blake2b(instance_id.encode(), digest_size=8).hexdigest()
