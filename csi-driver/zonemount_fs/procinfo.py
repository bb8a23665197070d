"""How is the process behind a FUSE request ending? Read from ``/proc`` (Linux only).

The kernel sends FLUSH for every ``close()`` of a descriptor, including the implicit closes
when a process exits (``do_exit`` -> ``exit_files``). At that moment the exiting thread
already carries everything needed to tell a normal exit from a death by signal:

* ``/proc/<tid>/stat`` field 9 (``flags``) has ``PF_EXITING`` (0x4) once ``do_exit`` started;
* field 52 (``exit_code``, readable by root or the process' owner since Linux 3.5) is set
  by ``do_exit`` *before* ``exit_files``: ``status << 8`` for ``exit(status)`` and the signal
  number (plus 0x80 for a core dump) for a death by signal - the ``waitpid`` encoding.

A group exit (``SIGKILL`` of a JVM, ``exit_group``) gives every thread of the group that exit
code, and the last thread to leave closes the files, so the whole thread group
(``/proc/<tgid>/task/*``) is inspected once its leader is exiting: the opener's thread may
be gone already. While the leader still runs no group exit is under way (threads share one
file table), so a close() of a live process costs one or two reads, not one per thread.

Whose ``close()`` a flush is (R-WRITE-FORKED-CLOSE): ``close`` takes the descriptor out of the
closing process' table *before* the kernel sends FLUSH, so while the opener's process still
has a descriptor open for writing on the file (``/proc/<tgid>/fd``, ``fdinfo`` flags) the
flush came from another process' copy (a forked child closing what it inherited). The opener's
thread blocked in ``close`` (``/proc/<tid>/syscall``) is the common case, told with one read.

What cannot be told apart (docs/SEMANTICS.md, R-WRITE-KILLED-PUBLISHES-NOTHING):
* a process in another PID namespace than the FUSE server (the kernel reports pid 0);
* a process already reaped when we look (only possible for ``release``, which is async);
* a descriptor shared with another process (fork, SCM_RIGHTS): the *opener* is inspected,
  because pyfuse3 does not pass the FLUSH request's own pid;
* a thread group whose leader left with ``pthread_exit`` before the group was killed
  still shows the leader's 0, but the killed threads show the signal, so it is caught.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

PF_EXITING = 0x4
PROC = Path("/proc")


@dataclass(frozen=True)
class TaskState:
    state: str
    flags: int
    exit_code: int

    @property
    def exiting(self) -> bool:
        return bool(self.flags & PF_EXITING) or self.state in ("Z", "X")

    @property
    def signal(self) -> int:
        """The signal that ends this task (0: none, or a normal exit)."""
        return self.exit_code & 0x7F if self.exiting else 0


def _read(path: str) -> str:
    """A small ``/proc`` file (every create and close reads one or two: no ``pathlib``, no
    buffered text layer)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode("utf-8", "replace")
    finally:
        os.close(fd)


def task_state(path: Path | str) -> TaskState | None:
    """Parse a ``stat`` file of ``/proc``; None when the task is gone."""
    try:
        raw = _read(f"{path}/stat")
    except OSError:
        return None
    # "pid (comm) S ppid ...": comm may hold spaces and parentheses; split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); field n is fields[n - 3]
    exit_code = int(fields[52 - 3]) if len(fields) > 52 - 3 else 0
    return TaskState(fields[0], int(fields[9 - 3]), exit_code)


def tgid_of(pid: int) -> int | None:
    try:
        text = _read(f"/proc/{pid}/status")
        start = text.index("\nTgid:") + 6
        return int(text[start : text.index("\n", start)])
    except (OSError, ValueError):
        return None


def killed_by(pid: int, tgid: int | None = None) -> int | None:
    """The signal ending the thread ``pid`` or its thread group ``tgid``; 0 when it is alive
    or exiting normally; None when nothing can be told (no pid, or the process is gone)."""
    if pid <= 0:
        return None
    tgid = tgid or tgid_of(pid) or pid
    opener = task_state(f"/proc/{pid}")
    if opener is not None and opener.signal:
        return opener.signal
    leader = opener if tgid == pid else task_state(f"/proc/{tgid}")
    if leader is not None and not leader.exiting:
        # Threads share one file table, so the flush of a group exit comes from the last
        # thread to leave, after the leader entered do_exit: a leader still running means
        # this is a close() of a live process. One or two reads instead of one per thread
        # (a JVM has dozens, and every Spark part file's close() asked).
        return 0
    seen = opener is not None or leader is not None
    for task in sorted((PROC / str(tgid) / "task").glob("*")):
        st = task_state(task)
        if st is None:
            continue
        seen = True
        if st.signal:
            return st.signal
    return 0 if seen else None


#: The number of ``close`` in ``/proc/<tid>/syscall``, by machine (None: not known here, so
#: :func:`closing` cannot tell and every such flush looks at the descriptor table).
_CLOSE_SYSCALL = {"x86_64": 3, "aarch64": 57}.get(os.uname().machine)


def closing(tid: int) -> bool | None:
    """Is thread ``tid`` blocked in ``close()`` now (None: cannot be told)? A FLUSH keeps the
    closing thread blocked until it is answered, so the opener's own ``close`` shows here."""
    if _CLOSE_SYSCALL is None or tid <= 0:
        return None
    try:
        first = _read(f"/proc/{tid}/syscall").split(" ", 1)[0]
    except OSError:
        return None
    if first == "running":
        return False
    try:
        return int(first) == _CLOSE_SYSCALL
    except ValueError:
        return None


def _open_for_writing(tgid: int, fd: str) -> bool:
    try:
        text = _read(f"/proc/{tgid}/fdinfo/{fd}")
        start = text.index("flags:") + 6
        flags = int(text[start : text.index("\n", start)].strip(), 8)
    except (OSError, ValueError):
        return False
    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


def write_descriptor(tgid: int, path: str, hint: int | None = None) -> int | None:
    """A descriptor of process ``tgid`` open for writing on ``path`` (as this process sees
    the path), ``hint`` checked first; None when it has none, or it cannot be told (the
    process is gone, or its table cannot be read)."""
    fds = f"/proc/{tgid}/fd"
    if hint is not None:
        try:
            if os.readlink(f"{fds}/{hint}") == path and _open_for_writing(tgid, str(hint)):
                return hint
        except OSError:
            pass
    try:
        names = os.listdir(fds)
    except OSError:
        return None
    for name in names:
        try:
            if os.readlink(f"{fds}/{name}") != path:
                continue
        except OSError:
            continue
        if _open_for_writing(tgid, name):
            return int(name)
    return None


def fatal_signal_pending(pid: int) -> bool:
    """SIGKILL queued for the thread or its group (the caller is being killed)."""
    bit = 1 << (signal.SIGKILL - 1)
    try:
        text = _read(f"/proc/{pid}/status")
    except OSError:
        return True  # gone: nobody waits for the answer
    for line in text.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
            return True
    return False


def available() -> bool:
    return os.path.exists(PROC / "self" / "stat")
