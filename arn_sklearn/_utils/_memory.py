"""How much memory this process can still allocate.

The machine's ``MemAvailable`` overstates it in a container or under ``ulimit -v``:
an allocation past the cgroup limit is killed by the kernel's OOM killer, and
one past ``RLIMIT_AS`` fails inside numpy with a raw "Unable to allocate".
:func:`available_memory_bytes` is the smallest of the limits that apply, so that
the size guards can refuse a fit up front with a clear message.
"""

import os

# Paths are module attributes so that the tests can point them at fake files.
_MEMINFO = "/proc/meminfo"
_SELF_STATUS = "/proc/self/status"
_SELF_CGROUP = "/proc/self/cgroup"
_CGROUP_ROOT = "/sys/fs/cgroup"
# cgroup v1 writes "no limit" as a huge page-aligned number (2^63 rounded down).
_CGROUP_V1_UNLIMITED = 2**60


def available_memory_bytes():
    """Bytes the process can still allocate, or None when nothing is known.

    The smallest of: the machine's ``MemAvailable`` (``/proc/meminfo``; else
    ``sysconf``), the cgroup v2 headroom ``memory.max - memory.current`` (or v1
    ``memory.limit_in_bytes - memory.usage_in_bytes``) where a limit is set,
    and the address space left under the soft ``RLIMIT_AS`` (the limit minus
    the process's current ``VmSize``).

    Examples
    --------
    >>> from arn_sklearn._utils._memory import available_memory_bytes
    >>> available = available_memory_bytes()
    >>> available is None or available >= 0
    True
    """
    candidates = [_machine_available(), _cgroup_available(), _rlimit_available()]
    known = [c for c in candidates if c is not None]
    return max(0, min(known)) if known else None


def _read_int(path):
    """The first token of a file as an int; None if absent, unreadable or not an int."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_field_bytes(path, field):
    """A ``Field:   123 kB`` line of a /proc file, in bytes."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _machine_available():
    available = _proc_field_bytes(_MEMINFO, "MemAvailable")
    if available is not None:
        return available
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _own_cgroups():
    """This process's cgroup paths: (unified v2 paths, v1 memory-controller paths)."""
    v2, v1 = [], []
    try:
        with open(_SELF_CGROUP) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    v2.append(path)
                elif "memory" in controllers.split(","):
                    v1.append(path)
    except (OSError, ValueError):
        pass
    # Unknown (or a container's namespaced "/"): the mount's root is our cgroup.
    return v2 or ["/"], v1 or ["/"]


def _ancestors(root, path):
    """``root/path`` and every directory above it, up to ``root``."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts), -1, -1):
        yield os.path.join(root, *parts[:depth])


def _cgroup_available():
    """Smallest headroom under a memory limit of this cgroup or of any parent."""
    v2, v1 = _own_cgroups()
    headroom = []
    # Pure v2 mounts the unified hierarchy at the root; hybrid v1/v2 at "unified".
    for root in (_CGROUP_ROOT, os.path.join(_CGROUP_ROOT, "unified")):
        for path in v2:
            for directory in _ancestors(root, path):
                # "max" (no limit) does not parse as an int: no limit at this level.
                limit = _read_int(os.path.join(directory, "memory.max"))
                current = _read_int(os.path.join(directory, "memory.current"))
                if limit is not None and current is not None:
                    cache = _stat_field(directory, "memory.stat", "inactive_file")
                    headroom.append(limit - current + cache)
    for path in v1:
        for directory in _ancestors(os.path.join(_CGROUP_ROOT, "memory"), path):
            limit = _read_int(os.path.join(directory, "memory.limit_in_bytes"))
            usage = _read_int(os.path.join(directory, "memory.usage_in_bytes"))
            if limit is not None and usage is not None and limit < _CGROUP_V1_UNLIMITED:
                cache = _stat_field(directory, "memory.stat", "total_inactive_file")
                headroom.append(limit - usage + cache)
    return min(headroom) if headroom else None


def _stat_field(directory, name, field):
    """A ``field value`` line of a cgroup stat file, in bytes; 0 if absent.

    A cgroup's usage counts the page cache of the files it read, and the kernel
    drops the inactive part of it before it kills anything: it is headroom (the
    "working set" of container runtimes is usage minus inactive file pages).
    """
    try:
        with open(os.path.join(directory, name)) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == field:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _rlimit_available():
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = _proc_field_bytes(_SELF_STATUS, "VmSize")
    return soft - (used or 0)
