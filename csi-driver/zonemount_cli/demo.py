"""``zonemount demo`` / ``make demo``: the whole product on one machine, in a couple of minutes.

Steps, each shown with progress and timed; a failure names the step and why:

1. start an S3 server on loopback (moto: S3, IAM, STS and EC2 in one process) and put a small
   "landing" data set (CSV event files) in a general-purpose bucket;
2. reconcile the example ``S3ExpressBucket`` + ``S3MountClass`` through the operator's real
   reconcile code (``zonemount reconcile``): AZ resolution, the directory bucket, lifecycle,
   encryption, the ``s3express:CreateSession`` policy attached to a role, and the bulk import of
   the landing data; then the StorageClass the operator would write;
3. start the CSI node plugin (``zonemount csi-node``) and ask it over its gRPC unix socket to
   publish a volume exactly as kubelet would (NodeGetInfo, NodePublishVolume);
4. run a Spark-style job in the mount: tasks read the imported events, write partitioned output
   under ``_temporary/<attempt>``, commit by renaming their task directories, the job commits
   by moving task output into place and writes ``_SUCCESS``; a reader then reads it back;
5. print a summary (what was created, bytes, rates) and clean everything up.

The S3 server does not speak CreateSession, so the mount runs with
ZONEMOUNT_DISABLE_S3_EXPRESS_SESSION_AUTH=1 (session auth itself is tested elsewhere).

Stopping it: Ctrl-C and SIGTERM (``timeout``, a CI runner cancelling, ``kill``) interrupt the
step in progress at once and run the same clean-up as the end of a finished demo: every volume
the demo published is unpublished (its FUSE mount unmounted), the CSI node plugin and the S3
server are stopped, the work directory removed. One line on stderr says which signal came at
which step; the exit status is 130 (SIGINT) or 143 (SIGTERM), 128 + the signal, as a shell
reports a process killed by it - the demo did not finish. The demo is a sequence of finite
steps with nothing to hand over on stop, so an immediate interruption is what fits, not
:class:`~zonemount_contract.cli.StopSignals` (which records the signal for a long-running
command to act on when it next looks): :class:`Interrupts` turns SIGTERM into the same
``KeyboardInterrupt`` unwinding as Ctrl-C, installed before anything is started. Invariant:
whatever needs stopping is in ``Demo.cleanups`` before it can exist - the S3 server is started
with the interruption deferred (``Interrupts.deferred``: a signal then cancels the start through
``start_moto``'s ``cancelled``, which stops the server, and is raised once its stop is
registered), and the unpublish is registered before NodePublishVolume is sent. The S3 server
and the node plugin run in sessions of their own, so a Ctrl-C in the terminal reaches only the
demo, which stops them in order (the plugin must still answer the unpublish). During the
clean-up further signals are noted, not raised: it runs to the end.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from zonemount_contract import keys
from zonemount_fs.store.s3 import DISABLE_EXPRESS_ENV

from .servers import LocalS3, StartCancelled, start_moto

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
BIN = Path(sys.executable).parent
ROLE = "spark-executor"
LANDING = "demo-landing"


class StepFailed(Exception):
    """A demo step failed; the message says which and why."""


class Interrupts:
    """SIGINT and SIGTERM as ``KeyboardInterrupt`` (see the module doc), from :meth:`install`.

    Not installed (a ``Demo`` built in a test), it only holds the state: nothing is raised."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._raise = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self._raise = True
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handler)

    def restore(self) -> None:
        self._raise = False
        for signum, old in self._previous.items():
            signal.signal(signum, old)
        self._previous.clear()

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signal.Signals(signum).name)
        if self._raise:
            self._raise = False  # once: the unwinding and the clean-up are not interrupted again
            raise KeyboardInterrupt(self.received[0])

    def pending(self) -> bool:
        return bool(self.received)

    def hold(self) -> None:
        """From now on note signals without raising (the clean-up runs to its end)."""
        self._raise = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """No ``KeyboardInterrupt`` inside; a signal that came is raised on leaving."""
        raising, self._raise = self._raise, False
        try:
            yield
        finally:
            self._raise = raising and not self.received
        if raising and self.received:
            raise KeyboardInterrupt(self.received[0])

    def exit_code(self) -> int:
        """128 + the first signal (130 for a KeyboardInterrupt without one, e.g. in a test)."""
        name = self.received[0] if self.received else "SIGINT"
        return 128 + int(signal.Signals[name])


@dataclass
class Demo:
    workdir: Path
    tasks: int = 8
    files: int = 24
    rows_per_file: int = 20_000
    server: LocalS3 | None = None
    env: dict[str, str] = field(default_factory=dict)
    facts: dict[str, str] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    interrupts: Interrupts = field(default_factory=Interrupts)
    current_step: str = ""

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        n = len(self.timings) + 1
        self.current_step = f"step {n} ({title})"
        console.print(f"[bold cyan]▶ {n}. {title}[/]")
        start = time.perf_counter()
        try:
            yield
        except StepFailed:
            raise
        except Exception as exc:
            raise StepFailed(f"step {n} ({title}) failed: {type(exc).__name__}: {exc}") from exc
        elapsed = time.perf_counter() - start
        self.timings.append((title, elapsed))
        console.print(f"  [green]✓[/] {title} [dim]({elapsed:.1f} s)[/]")

    # -- 1 ---------------------------------------------------------------------------------
    def start_s3(self) -> None:
        # the server is stopped whatever comes (module doc); StartCancelled: it was stopped,
        # and deferred() raises the KeyboardInterrupt on leaving
        with self.interrupts.deferred(), contextlib.suppress(StartCancelled):
            self.server = start_moto(cancelled=self.interrupts.pending)
            self.cleanups.append(self.server.stop)
        assert self.server is not None
        self.env = {**os.environ, **self.server.env(), DISABLE_EXPRESS_ENV: "1"}
        s3: Any = self.server.client()
        s3.create_bucket(Bucket=LANDING)
        rng = random.Random(42)  # noqa: S311 - test data
        total = 0
        for i in range(self.files):
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(["event_id", "day", "user", "amount"])
            for r in range(self.rows_per_file):
                writer.writerow(
                    [
                        f"{i}-{r}",
                        f"2026-11-{1 + (r % 7):02d}",
                        rng.randrange(10_000),
                        f"{rng.random() * 100:.2f}",
                    ]
                )
            body = buf.getvalue().encode()
            total += len(body)
            s3.put_object(Bucket=LANDING, Key=f"events/part-{i:04d}.csv", Body=body)
        import boto3

        boto3.client(
            "iam",
            endpoint_url=self.server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 - the local server's dummy key
        ).create_role(
            RoleName=ROLE,
            AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}',
        )
        self.facts["S3 server"] = f"moto on {self.server.endpoint}"
        self.facts["landing data"] = (
            f"s3://{LANDING}/events/: {self.files} CSV files, {total / 1e6:.1f} MB"
        )

    # -- 2 ---------------------------------------------------------------------------------
    def reconcile(self) -> dict[str, Any]:
        assert self.server is not None
        docs = [
            {
                "apiVersion": "zonemount.io/v1alpha1",
                "kind": "S3ExpressBucket",
                "metadata": {"name": "demo", "namespace": "spark"},
                "spec": {
                    "region": "us-east-1",
                    "availabilityZone": "us-east-1d",
                    "baseName": "spark-demo",
                    "deletionPolicy": "Delete",
                    "lifecycle": {
                        "expireAfterDays": 7,
                        "abortIncompleteMultipartUploadAfterDays": 1,
                    },
                    "encryption": {"type": "SSE-S3"},
                    "access": {
                        "roleArns": [f"arn:aws:iam::123456789012:role/{ROLE}"],
                        "sessionMode": "ReadWrite",
                    },
                    "import": {"source": f"s3://{LANDING}/events/"},
                },
            },
            {
                "apiVersion": "zonemount.io/v1alpha1",
                "kind": "S3MountClass",
                "metadata": {"name": "spark-demo"},
                "spec": {
                    "bucketRef": {"name": "demo", "namespace": "spark"},
                    "provisioning": "PerClaimPrefix",
                },
            },
        ]
        cr = self.workdir / "demo-crs.yaml"
        cr.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        proc = subprocess.run(
            [
                str(BIN / "zonemount"),
                "reconcile",
                "-f",
                str(cr),
                "--endpoint-url",
                self.server.endpoint,
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise StepFailed(
                f"zonemount reconcile exited with {proc.returncode}: {proc.stdout[-2000:]}"
            )
        results = list(yaml.safe_load_all(proc.stdout))
        bucket: dict[str, Any] = next(r for r in results if r["kind"] == "S3ExpressBucket")[
            "status"
        ]
        mclass = next(r for r in results if r["kind"] == "S3MountClass")
        sc = mclass["storageClass"]
        self.facts["directory bucket"] = (
            f"{bucket['bucketName']} ({bucket['availabilityZone']}, {bucket['availabilityZoneId']})"
        )
        self.facts["IAM policy"] = str(bucket.get("policyArn", "-"))
        imported = bucket.get("import") or {}
        if imported:
            self.facts["bulk import"] = (
                f"{imported.get('objectsCopied', imported.get('objects', '?'))} objects, "
                f"{int(imported.get('bytesCopied', imported.get('bytes', 0))) / 1e6:.1f} MB"
            )
        zones = [
            v
            for t in sc.get("allowedTopologies", [])
            for e in t.get("matchLabelExpressions", [])
            for v in e.get("values", [])
        ]
        self.facts["StorageClass"] = (
            f"{sc['metadata']['name']} -> provisioner {sc['provisioner']}, zones {zones}"
        )
        return bucket

    # -- 3 ---------------------------------------------------------------------------------
    def publish(self, bucket: dict[str, Any]) -> tuple[Path, Any, Any]:
        import grpc
        from zonemount_csi._proto import csi_pb2, csi_pb2_grpc

        assert self.server is not None
        sock = Path(tempfile.mkdtemp(prefix="zmdemo-", dir="/tmp")) / "csi.sock"
        self.cleanups.append(lambda: shutil.rmtree(sock.parent, ignore_errors=True))
        kubelet = self.workdir / "kubelet"
        (kubelet / "pods").mkdir(parents=True)
        with self.interrupts.deferred():  # the plugin is stopped whatever comes: module doc
            log = open(self.workdir / "csi-node.log", "wb")  # noqa: SIM115
            plugin = subprocess.Popen(
                [
                    str(BIN / "zonemount"),
                    "csi-node",
                    "--endpoint",
                    f"unix://{sock}",
                    "--node-id",
                    "demo-node",
                    "--zone",
                    bucket["availabilityZone"],
                    "--zone-id",
                    bucket["availabilityZoneId"],
                    "--kubelet-dir",
                    str(kubelet),
                    "--state-dir",
                    str(self.workdir / "csi-state"),
                    "--allowed-endpoint-url",
                    self.server.endpoint,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the demo only: it unpublishes first
            )

            def stop_plugin() -> None:
                plugin.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    plugin.wait(timeout=10)
                log.close()

            self.cleanups.append(stop_plugin)
        deadline = time.monotonic() + 30
        while not sock.exists():
            if plugin.poll() is not None or time.monotonic() > deadline:
                raise StepFailed(
                    f"the CSI node plugin did not start; see {self.workdir / 'csi-node.log'}"
                )
            time.sleep(0.1)
        channel = grpc.insecure_channel(f"unix://{sock}")
        self.cleanups.append(channel.close)
        node = csi_pb2_grpc.NodeStub(channel)  # type: ignore[no-untyped-call]
        info = node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=10)
        pod_uid = str(uuid.uuid4())
        target_dir = kubelet / "pods" / pod_uid / "volumes" / "kubernetes.io~csi" / "pvc-demo"
        target_dir.mkdir(parents=True)
        target = target_dir / "mount"
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id="demo-volume",
            target_path=str(target),
            volume_capability=csi_pb2.VolumeCapability(
                mount=csi_pb2.VolumeCapability.MountVolume(
                    mount_flags=["--allow-delete", "--allow-overwrite"]
                ),
                access_mode=csi_pb2.VolumeCapability.AccessMode(
                    mode=csi_pb2.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER
                ),
            ),
            volume_context={
                keys.BUCKET_NAME: bucket["bucketName"],
                keys.REGION: "us-east-1",
                keys.ENDPOINT_URL: self.server.endpoint,
            },
        )

        def unpublish() -> None:
            with contextlib.suppress(Exception):
                node.NodeUnpublishVolume(
                    csi_pb2.NodeUnpublishVolumeRequest(
                        volume_id="demo-volume", target_path=str(target)
                    ),
                    timeout=30,
                )

        self.cleanups.append(unpublish)  # before the publish: interrupted, it may have mounted
        started = time.perf_counter()
        node.NodePublishVolume(request, timeout=60)
        publish_s = time.perf_counter() - started
        topo = dict(info.accessible_topology.segments)
        self.facts["CSI node"] = f"node {info.node_id}, topology {topo}"
        self.facts["volume"] = f"published at {target} in {publish_s:.2f} s"
        return target, node, request

    # -- 4 ---------------------------------------------------------------------------------
    def spark_job(self, mnt: Path) -> None:
        inputs = sorted(p for p in mnt.rglob("*.csv"))
        if not inputs:
            raise StepFailed(f"no imported CSV files visible in {mnt}")
        out = mnt / "warehouse" / "daily_totals"
        temp = out / "_temporary" / "0"
        temp.mkdir(parents=True)
        os.chmod(out, 0o755)  # noqa: S103 - what Hadoop's local file system does to everything it creates
        read_bytes = written = 0
        t0 = time.perf_counter()
        read_s = 0.0
        for task in range(self.tasks):
            attempt = temp / "_temporary" / f"attempt_0000_m_{task:06d}_0"
            totals: dict[str, float] = {}
            for path in inputs[task :: self.tasks]:
                r0 = time.perf_counter()
                data = path.read_bytes()
                read_s += time.perf_counter() - r0
                read_bytes += len(data)
                for row in csv.DictReader(io.StringIO(data.decode())):
                    totals[row["day"]] = totals.get(row["day"], 0.0) + float(row["amount"])
            for day, amount in sorted(totals.items()):
                part = attempt / f"day={day}" / f"part-{task:05d}.csv"
                part.parent.mkdir(parents=True, exist_ok=True)
                body = f"day,amount\n{day},{amount:.2f}\n".encode()
                part.write_bytes(body)
                os.chmod(part, 0o644)
                written += len(body)
            os.rename(attempt, temp / f"task_0000_m_{task:06d}")  # task commit
        for task_dir in sorted(temp.glob("task_*")):  # job commit (algorithm 1)
            for part_dir in task_dir.iterdir():
                dest = out / part_dir.name
                dest.mkdir(exist_ok=True)
                for f in part_dir.iterdir():
                    os.rename(f, dest / f.name)
        shutil.rmtree(out / "_temporary")
        (out / "_SUCCESS").write_bytes(b"")
        job_s = time.perf_counter() - t0
        # read back, as the next job would
        days = sorted(p.name for p in out.iterdir() if p.is_dir())
        grand = sum(
            float(line.split(",")[1])
            for p in out.rglob("part-*.csv")
            for line in p.read_text().splitlines()[1:]
        )
        expected = sum(
            float(r["amount"]) for p in inputs for r in csv.DictReader(io.StringIO(p.read_text()))
        )
        if abs(grand - expected) > 0.01 * len(inputs) * 7:
            raise StepFailed(f"read-back total {grand:.2f} != input total {expected:.2f}")
        self.facts["job"] = (
            f"{self.tasks} tasks read {read_bytes / 1e6:.1f} MB "
            f"({read_bytes / 1e6 / max(read_s, 1e-6):.0f} MB/s through the mount), wrote "
            f"{written} bytes in {len(days)} partitions, committed by directory renames; "
            f"job wall time {job_s:.1f} s (CSV parsing in Python included)"
        )
        self.facts["output"] = f"{out.relative_to(mnt)}/{{{', '.join(days[:3])}, ...}}, _SUCCESS"

    def keep_logs(self) -> list[Path]:
        """Copy the FUSE client's log(s) out of the node plugin's state directory (which the
        clean-up may remove) into the work directory; return the copies."""
        kept: list[Path] = []
        for log_file in sorted((self.workdir / "csi-state").rglob("zonemount.log*")):
            copy = self.workdir / f"fuse-client-{log_file.parent.name}-{log_file.name}"
            with contextlib.suppress(OSError):
                shutil.copyfile(log_file, copy)
                kept.append(copy)
        return kept

    def summary(self) -> None:
        table = Table(title="zonemount demo: what was created", show_lines=False)
        table.add_column("what", style="bold")
        table.add_column("result")
        for key, value in self.facts.items():
            table.add_row(key, value)
        console.print(table)
        total = sum(t for _, t in self.timings)
        console.print(
            f"[bold green]demo finished in {total:.0f} s[/]: every step ran against real "
            "servers (S3 on loopback, a FUSE mount, gRPC over a unix socket)."
        )


def main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="zonemount demo",
        description="The whole product on one machine in a couple of minutes: an S3 server on "
        "loopback, the operator's reconcile of an S3ExpressBucket and an S3MountClass, the CSI "
        "node plugin publishing a volume over gRPC as kubelet would, and a Spark-style job "
        "committing by rename in the real FUSE mount. Needs /dev/fuse (root or the fuse group).",
        epilog="To mount a local bucket by hand afterwards: zonemount local-s3",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--tasks", type=int, default=8, help="Spark-style tasks to run (default %(default)s)"
    )
    args = parser.parse_args(list(argv))
    if os.geteuid() != 0 and not os.access("/dev/fuse", os.R_OK | os.W_OK):
        console.print(
            "[red]zonemount demo: /dev/fuse is not usable: run as root or join the 'fuse' group[/]"
        )
        return 1
    interrupts = Interrupts()
    interrupts.install()  # before anything is started: see the module doc
    try:
        return _run(args, interrupts)
    finally:
        interrupts.restore()


def _run(args: Any, interrupts: Interrupts) -> int:
    demo = Demo(
        Path(tempfile.mkdtemp(prefix="zonemount-demo-")), tasks=args.tasks, interrupts=interrupts
    )
    try:  # a signal while a failure is reported (below) still ends in this clean-up
        code = _steps(demo)
        if code != 0:
            args.keep = True
    except KeyboardInterrupt:
        code = interrupts.exit_code()
        name = interrupts.received[0] if interrupts.received else "SIGINT"
        print(
            f"zonemount demo: {name} received during {demo.current_step or 'start-up'}: "
            "interrupted, cleaning up",
            file=sys.stderr,
            flush=True,
        )
    finally:
        interrupts.hold()  # already so unless no signal came: see Interrupts._handler
        with console.status("cleaning up"):
            for cleanup in reversed(demo.cleanups):
                with contextlib.suppress(Exception):
                    cleanup()
            if not args.keep:
                shutil.rmtree(demo.workdir, ignore_errors=True)
    return code


def _steps(demo: Demo) -> int:
    """Run the steps: 0, or 1 when one failed (reported); raises ``KeyboardInterrupt``."""
    try:
        with demo.step("start an S3 server on loopback and land some data"):
            demo.start_s3()
        with demo.step("reconcile S3ExpressBucket + S3MountClass (operator code)"):
            bucket = demo.reconcile()
        with demo.step("publish a volume through the CSI node plugin over gRPC"):
            target, _, _ = demo.publish(bucket)
        with demo.step("run a Spark-style job in the mount (write, commit by rename, read back)"):
            demo.spark_job(target)
        demo.interrupts.hold()  # finished: a signal from here on is noted; exit 0
        demo.summary()
    except StepFailed as exc:
        demo.interrupts.hold()  # a signal before this is raised once, caught by _run
        console.print(f"[bold red]✗ {exc}[/]")
        cause = exc.__cause__ or exc
        console.print(
            "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)),
            markup=False,
        )
        for kept in demo.keep_logs():
            console.print(f"[dim]FUSE client log: {kept}[/]")
        console.print(f"[dim]work directory kept for inspection: {demo.workdir}[/]")
        return 1
    return 0
