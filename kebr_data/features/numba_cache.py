"""Where librosa's numba kernels are cached, and who may write them.

numba compiles librosa's kernels on first import or first call and keeps them in a cache folder; its cache
files are not safe against two writers (a torn index crashes the next load), so every compile that may
write there runs under one flock per folder: the acoustic stage's warm-up in the parent, and the first clip
of each librosa-using stage in every worker (another node of a cluster, another run on a cold cache).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import KebrError
from ..storage.lock import OutputLock


def numba_cache_dir() -> Path:
    """Where compiled librosa kernels are kept: $NUMBA_CACHE_DIR when set, else $KEBR_CACHE_DIR/numba,
    else $XDG_CACHE_HOME/kebr/numba (~/.cache/kebr/numba): per user, so every run on the machine finds it."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    if os.environ.get("KEBR_CACHE_DIR"):
        return Path(os.environ["KEBR_CACHE_DIR"]) / "numba"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kebr" / "numba"


def use_numba_cache() -> Path:
    """Point numba's cache at `numba_cache_dir()` in this process and the workers it starts.

    Must run before librosa is imported: numba picks a kernel's cache folder when the kernel is defined.
    A folder that cannot be created is left alone (numba then falls back to its own places).
    """
    path = numba_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return path
    os.environ["NUMBA_CACHE_DIR"] = str(path)
    if "numba" in sys.modules:  # imported already (by another library): make it re-read the variable
        sys.modules["numba"].core.config.reload_config()
    return path


#: the lock file in the cache folder: whoever compiles kernels into the folder holds it
LOCK_NAME = ".compile.lock"
_first_done: set[str] = set()


@contextlib.contextmanager
def exclusive(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the toolkit's lock (`OutputLock`) on `path`, waiting for it (`on_wait` is called once if another
    process holds it). Where the folder cannot hold a lock (a planted symlink, a file system without flock:
    ENOLCK, ENOSYS, ...), go on unlocked."""
    lock = OutputLock(path, "numba kernel compilation", on_wait or (lambda: None))
    try:
        lock.acquire()
    except (KebrError, OSError):
        yield
        return
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def first_use(key: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """The first `key` block in this process (a stage's first clip: librosa's lazily imported modules and
    jitted functions compile then) runs under the cache's lock while the cache has not yet seen `key` with
    this librosa, so that two workers on a cold cache never write the same kernel at once; once one has
    finished such a block, a marker file in the cache lets every later worker skip the lock (waiting for
    each other's imports would serialise every run's start). A block that raised leaves no mark."""
    if key in _first_done:
        yield
        return
    cache = use_numba_cache()
    marker = _marker(cache, key)
    if marker.is_file():
        _first_done.add(key)
        yield
        return
    with exclusive(cache / LOCK_NAME, on_wait):
        yield
        with contextlib.suppress(OSError):  # a marker never written only costs a lock next time
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    _first_done.add(key)


def warmed(key: str) -> bool:
    """Whether the cache has seen `key` with this librosa (first_use's marker) and holds kernels: a parent
    need not warm it up for its workers again."""
    cache = use_numba_cache()
    return _marker(cache, key).is_file() and bool(cached_kernels(cache))


def _marker(cache: Path, key: str) -> Path:
    return cache / f".warmed-{key}-{_librosa_version()}"


def _librosa_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("librosa")
    except PackageNotFoundError:
        return "none"


def cached_kernels(path: Path) -> set[str]:
    """The compiled kernels' file names in a cache folder."""
    return {p.name for p in path.rglob("*.nb[ic]")} if path.is_dir() else set()
