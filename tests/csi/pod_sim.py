"""A "pod" for the container-faithful CSI tests: run as ``unshare --mount --propagation slave
python pod_sim.py TARGET VIEW {private|slave} NAME STOPFILE``.

Like a container runtime does for a volumeMount, it bind-mounts the kubelet's target path at
VIEW inside its own mount namespace, with ``mountPropagation: None`` (rprivate) or
``HostToContainer`` (rslave), and then only ever uses VIEW: it writes a new file, reads it
back, reads a fixed input file and lists the directory, in a loop, until STOPFILE exists.
Every operation is reported as one JSON line on stdout: ``{"t", "op", "ok", "err"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def report(op: str, ok: bool, err: str = "") -> None:
    sys.stdout.write(json.dumps({"t": time.time(), "op": op, "ok": ok, "err": err}) + "\n")
    sys.stdout.flush()


def main() -> int:
    target, view, mode, name, stopfile = sys.argv[1:6]
    os.makedirs(view, exist_ok=True)
    subprocess.run(["mount", "--rbind", target, view], check=True)
    flag = "--make-rslave" if mode == "slave" else "--make-rprivate"
    subprocess.run(["mount", flag, view], check=True)
    report("ready", True)
    payload = os.urandom(64 * 1024)
    i = 0
    while not os.path.exists(stopfile):
        i += 1
        path = os.path.join(view, f"{name}-{i % 50}.bin")
        for op in ("write", "read", "input", "list"):
            try:
                if op == "write":
                    with open(path, "wb") as handle:
                        handle.write(payload)
                elif op == "read":
                    with open(path, "rb") as handle:
                        if handle.read() != payload:
                            raise OSError(0, "read back different bytes")
                elif op == "input":
                    with open(os.path.join(view, "input.txt"), "rb") as handle:
                        if handle.read() != b"input data":
                            raise OSError(0, "input.txt has different bytes")
                else:
                    os.listdir(view)
                report(op, True)
            except OSError as exc:
                report(op, False, f"{exc.errno} {exc.strerror}")
                break
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
