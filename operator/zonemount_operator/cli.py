"""``zonemount operator | reconcile | cp | sync``: the operator's command-line entry points.

Each entry takes ``argv`` (without the subcommand name) and returns an exit code:
0 success, 1 the work failed (the message says why), 2 bad input. Bad input and AWS errors
are reported as one line on stderr, never as a traceback; credentials are never printed.

* ``operator``  runs the kopf handlers of :mod:`zonemount_operator.handlers`.
* ``reconcile`` runs the same reconcile functions once against AWS (or ``--endpoint-url``)
  without a cluster and prints the resulting status (and, for an S3MountClass, the
  StorageClass/PersistentVolume it would write) as YAML. ``--dry-run`` only validates and
  resolves (read-only AWS calls) and prints the plan.
* ``cp`` / ``sync`` run the bulk copy engine (:mod:`zonemount_operator.transfer`) with a
  progress bar; ``sync`` skips objects that are already up to date.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zonemount_contract.cli import OneLineParser

from zonemount_operator import names
from zonemount_operator.errors import DependencyNotReady, SpecError, ZonemountError

if TYPE_CHECKING:  # imported where used: ``zonemount cp`` loads neither yaml nor asyncio here
    import yaml


def _fail(prog: str, message: str, code: int = 1) -> int:
    print(f"zonemount {prog}: {message}", file=sys.stderr)
    return code


# -- operator ----------------------------------------------------------------------------------
def operator_main(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="zonemount operator",
        description="Run the zonemount operator (kopf) against the current cluster.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve S3ExpressBuckets in this namespace (repeatable; globs ok)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="serve every namespace (the default)"
    )
    parser.add_argument(
        "--liveness-port", type=int, default=None, help="serve /healthz on this port (0.0.0.0)"
    )
    parser.add_argument("--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything")
    args = parser.parse_args(list(argv))
    from zonemount_operator import tenancy

    try:  # the admin's tenancy policy: a broken file stops here, in one line
        tenancy.load()
    except SpecError as exc:
        return _fail("operator", str(exc), 2)
    from zonemount_operator.errors import KubeError
    from zonemount_operator.kube import kopf_login

    try:
        kopf_login()
    except KubeError as exc:
        return _fail("operator", str(exc))
    import kopf

    from zonemount_operator.handlers import registry

    kopf.configure(verbose=args.verbose, debug=args.debug)
    liveness = f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=liveness,
    )
    return 0


# -- reconcile ---------------------------------------------------------------------------------
def _yaml_error(path: str, exc: yaml.YAMLError) -> str:
    """One line naming the file, line and column (1-based, as editors count) and the problem."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return f"{path} is not valid YAML: {str(exc).splitlines()[0]}"
    context = getattr(exc, "context", None)
    where = f" ({context})" if context else ""
    return f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}{where}"


def _load(path: str) -> list[dict[str, Any]]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(_yaml_error("<stdin>" if path == "-" else path, exc)) from exc
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") not in {"S3ExpressBucket", "S3MountClass"}:
            kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
            raise SpecError(
                f"{path}: expected S3ExpressBucket or S3MountClass documents, got {kind}"
            )
        if not (doc.get("metadata") or {}).get("name"):
            raise SpecError(f"{path}: a {doc['kind']} has no metadata.name")
    if not docs:
        raise SpecError(f"{path} contains no documents")
    return docs


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _plan_printout(plan: Any) -> dict[str, Any]:
    """A :class:`~zonemount_operator.bucket.BucketPlan` as ``--dry-run`` prints it."""
    from zonemount_operator.bucket import session_policy

    fields = plan.fields()
    out: dict[str, Any] = {
        key: fields[key]
        for key in (
            "bucketName",
            "bucketArn",
            "region",
            "availabilityZone",
            "availabilityZoneId",
            "endpoint",
        )
    }
    out["deletionPolicy"] = plan.spec.deletion_policy
    if plan.spec.role_arns:
        out["policy"] = {
            "name": names.policy_name(plan.owner.uid),
            "document": session_policy(plan.arn, plan.spec.session_mode),
            "attachTo": list(plan.spec.role_arns),
        }
    return out


def _import_with_progress(
    doc: dict[str, Any], status: dict[str, Any], admin: Any, policy: Any
) -> dict[str, Any]:
    from zonemount_operator.bucket import import_conditions, owner_of, run_import
    from zonemount_operator.spec import parse_bucket

    meta = doc["metadata"]
    owner = owner_of(meta["name"], meta.get("namespace") or "default", meta.get("uid"))
    spec = parse_bucket(meta["name"], doc.get("spec") or {})
    with _ProgressBar(f"import {spec.import_source}") as bar:
        final = run_import(
            spec,
            status,
            admin,
            bar.from_import_status,
            stop=threading.Event(),
            namespace=owner.namespace,
            policy=policy,
            owner_uid=owner.uid,
        )
    status["import"] = final
    status["conditions"] = import_conditions(
        doc.get("spec") or {}, status, status.get("observedGeneration"), doc["metadata"]["name"]
    )
    return status


class _Offline:
    """One ``zonemount reconcile`` run: the file's documents, reconciled in order (buckets
    first) with the live reconcilers' own code: :func:`~zonemount_operator.bucket.plan_bucket`
    and :func:`~zonemount_operator.bucket.reconcile_bucket` for S3ExpressBuckets,
    :func:`~zonemount_operator.mountclass.referenced_bucket_facts` /
    :func:`~zonemount_operator.mountclass.bucket_facts` and
    :func:`~zonemount_operator.mountclass.desired_objects` for S3MountClasses (which print
    what they would write: there is no cluster to write it to)."""

    def __init__(self, args: argparse.Namespace, admin: Any, policy: Any) -> None:
        self.args, self.admin, self.policy = args, admin, policy
        # (namespace, name) -> the S3ExpressBucket as reconciled here: metadata and its
        # status (or, --dry-run, its plan; or the error that stopped it)
        self.buckets: dict[tuple[str, str], dict[str, Any]] = {}
        self.failed = False

    def bucket(self, doc: dict[str, Any]) -> dict[str, Any]:
        from zonemount_operator import conditions
        from zonemount_operator.bucket import plan_bucket, reconcile_bucket

        meta = doc["metadata"]
        key = (meta.get("namespace") or "default", meta["name"])
        ref = f"{doc['kind']}/{meta['name']}"
        if self.args.dry_run:
            plan = plan_bucket(
                meta["name"],
                key[0],
                doc.get("spec") or {},
                doc.get("status"),
                self.admin,
                uid=meta.get("uid"),
                policy=self.policy,
            )
            self.buckets[key] = {"metadata": meta, "plan": plan}
            return {"kind": doc["kind"], "name": meta["name"], "plan": _plan_printout(plan)}
        outcome = reconcile_bucket(
            meta["name"],
            key[0],
            doc.get("spec") or {},
            doc.get("status"),
            meta.get("generation"),
            admin=self.admin,
            uid=meta.get("uid"),
            policy=self.policy,
        )
        status = outcome.status
        for line in outcome.events:
            print(f"{ref}: {line}", file=sys.stderr)
        if (
            outcome.error is None
            and (doc.get("spec") or {}).get("import")
            and not self.args.no_import
        ):
            status = _import_with_progress(doc, status, self.admin, self.policy)
        self.buckets[key] = {"metadata": meta, "status": status}
        if not conditions.is_true(status.get("conditions"), "Ready"):
            self.failed = True
            ready = conditions.get(status.get("conditions"), "Ready") or {}
            print(
                f"{ref}: not Ready: {ready.get('reason')}: {ready.get('message')}",
                file=sys.stderr,
            )
        return {"kind": doc["kind"], "name": meta["name"], "status": _clean(status)}

    def mountclass(self, doc: dict[str, Any]) -> dict[str, Any]:
        from zonemount_operator.mountclass import desired_objects
        from zonemount_operator.spec import parse_mountclass

        name = doc["metadata"]["name"]
        spec = parse_mountclass(name, doc.get("spec") or {})
        import asyncio

        facts = asyncio.run(self._facts(name, spec))
        return {"kind": doc["kind"], "name": name, **desired_objects(name, None, spec, facts)}

    async def _facts(self, name: str, spec: Any) -> Any:
        from zonemount_operator.mountclass import (
            BucketFacts,
            bucket_facts,
            referenced_bucket_facts,
        )

        endpoint = getattr(self.admin, "endpoint_url", None)
        if spec.bucket_ref is None:
            return await bucket_facts(spec, None, self.admin)  # type: ignore[arg-type]
        known = self.buckets.get(spec.bucket_ref)
        if known is None:
            raise SpecError(
                f"S3MountClass {name}: bucketRef {'/'.join(spec.bucket_ref)} is not "
                "in this file; without a cluster put the S3ExpressBucket in the file"
            )
        if "error" in known:
            raise DependencyNotReady(
                f"S3ExpressBucket {'/'.join(spec.bucket_ref)} failed above: {known['error']}"
            )
        if "plan" in known:  # --dry-run: the bucket is planned, not made
            fields = known["plan"].fields()
            return BucketFacts(
                fields["bucketName"],
                fields["region"],
                fields["availabilityZone"],
                fields["availabilityZoneId"],
                endpoint,
            )
        return await referenced_bucket_facts(spec.bucket_ref, known, self.admin, endpoint)

    def run(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Reconcile one document; None when it failed (reported on stderr)."""
        ref = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            if doc["kind"] == "S3ExpressBucket":
                return self.bucket(doc)
            return self.mountclass(doc)
        except SpecError:
            raise
        except ZonemountError as exc:
            self.failed = True
            print(f"zonemount reconcile: {ref}: {exc}", file=sys.stderr)
            if doc["kind"] == "S3ExpressBucket":  # in the file, but not usable
                meta = doc["metadata"]
                key = (meta.get("namespace") or "default", meta["name"])
                self.buckets[key] = {"metadata": meta, "error": exc}
            return None


def _reconcile_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="zonemount reconcile",
        description="Reconcile S3ExpressBucket/S3MountClass documents once, "
        "without a cluster, and print the resulting status as YAML.",
    )
    parser.add_argument("-f", "--filename", required=True, help="YAML file ('-' for stdin)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and resolve only (read-only AWS calls); print the plan",
    )
    parser.add_argument(
        "--endpoint-url", help="S3/IAM/EC2/STS endpoint (e.g. a local moto: http://127.0.0.1:5000)"
    )
    parser.add_argument("--region", help="override spec.region of every S3ExpressBucket")
    parser.add_argument("--no-import", action="store_true", help="skip spec.import")
    parser.add_argument(
        "--tenancy-config",
        metavar="FILE",
        help="apply this tenancy policy (the operator's admin settings); default: none, since "
        "this command acts with your own AWS credentials",
    )
    return parser


def _reconcile_inputs(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]]]:
    """The tenancy policy and the file's documents, each checked before any AWS call
    (raises SpecError: bad input)."""
    from zonemount_operator import tenancy
    from zonemount_operator.spec import parse_bucket, parse_mountclass

    policy = (
        tenancy.load(args.tenancy_config)
        if args.tenancy_config
        else tenancy.TenancyPolicy.unrestricted()
    )
    if args.endpoint_url is not None:
        names.validate_endpoint_url(args.endpoint_url, "--endpoint-url")
    docs = _load(args.filename)
    for doc in docs:  # validate everything before touching AWS
        if args.region and doc["kind"] == "S3ExpressBucket":
            doc.setdefault("spec", {})["region"] = args.region
        parse = parse_bucket if doc["kind"] == "S3ExpressBucket" else parse_mountclass
        try:
            parse(doc["metadata"]["name"], doc.get("spec") or {})
        except SpecError as exc:
            raise SpecError(f"{doc['kind']}/{doc['metadata']['name']}: {exc}") from None
    return policy, docs


def _print_yaml(results: list[dict[str, Any]]) -> None:
    import yaml

    try:
        yaml.safe_dump_all(results, sys.stdout, sort_keys=False)
        sys.stdout.flush()
    except BrokenPipeError:  # `zonemount reconcile ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def reconcile_main(argv: Sequence[str]) -> int:
    args = _reconcile_parser().parse_args(list(argv))
    try:
        policy, docs = _reconcile_inputs(args)
    except SpecError as exc:
        return _fail("reconcile", str(exc), 2)
    from zonemount_operator.aws import Boto3BucketAdmin

    offline = _Offline(args, Boto3BucketAdmin(endpoint_url=args.endpoint_url), policy)
    results: list[dict[str, Any]] = []
    for doc in sorted(docs, key=lambda d: d["kind"] != "S3ExpressBucket"):
        try:
            result = offline.run(doc)
        except SpecError as exc:
            return _fail("reconcile", f"{doc['kind']}/{doc['metadata']['name']}: {exc}", 2)
        if result is not None:
            results.append(result)
    _print_yaml(results)
    return 1 if offline.failed else 0


# -- cp / sync ---------------------------------------------------------------------------------
class _ProgressBar:
    """A rich progress bar fed from the copy engine's reporter thread.

    The ``src -> dst`` line is printed once above the bar; the bar itself is a short label
    and fixed-width columns, so at 80 columns no number is squeezed or cut.
    """

    def __init__(self, label: str, enabled: bool = True, *, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None if console.width >= 100 else 12),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[objects]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled or not console.is_terminal,
        )
        self._task = self._progress.add_task(label, total=None, objects="")

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, p: Any) -> None:
        total = p.bytes_total if p.listing_done else None
        objects = f"{p.objects_done}/{p.objects_total}{'' if p.listing_done else '+'} obj"
        self._progress.update(
            self._task, completed=p.bytes_copied + p.bytes_skipped, total=total, objects=objects
        )

    def from_import_status(self, imp: dict[str, Any]) -> None:
        done = imp["bytesCopied"]
        objects = f"{imp['objectsCopied'] + imp['objectsSkipped']}/{imp['objectsTotal']} obj"
        self._progress.update(self._task, completed=done, objects=objects)


_COPY_EPILOG = """\
SRC and DST are s3://bucket/prefix/ URLs or local paths (local -> S3, S3 -> local, S3 -> S3).
A trailing / or a directory means everything below it; s3://b/key or a file means one object.
Wildcards as s5cmd takes them: '*' matches any characters including '/', '?' one character;
names keep their path after the last '/' before the first wildcard. Quote them for the shell.
Exit codes: 0 done; 1 some objects failed, nothing matched SRC, or S3 refused/unreachable
(one line says which); 2 bad arguments."""


def _aws_message(exc: BaseException, where: str) -> str:
    """A one-line description of an AWS/botocore failure for cp/sync users."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return _NO_CREDENTIALS
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or str(
            exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        )
        text = str(err.get("Message", "") or "").splitlines()[0] if err.get("Message") else ""
        hint = ""
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            hint = ": check the credentials and that they may read SRC and write DST"
        elif code in {"NoSuchBucket"}:
            hint = ": check the bucket name (and --endpoint-url)"
        return f"{where}: {code}{' (' + text + ')' if text else ''}{hint}"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"{where}: cannot reach {exc.kwargs.get('endpoint_url', 'S3')}: check --endpoint-url"
    return f"{where}: {type(exc).__name__}: {exc}"


_NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "or AWS_PROFILE, or run where an instance/pod role is available"
)


class _Refused(Exception):
    """A cp/sync failure already worded for the user; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _copy_parser(name: str, sync: bool) -> OneLineParser:
    parser = OneLineParser(
        prog=f"zonemount {name}",
        description=(
            "Copy every object under SRC to DST, skipping objects already up to date "
            "(same size and ETag, or not older)."
            if sync
            else "Copy every object under SRC to DST with many parallel streams."
        ),
        epilog=_COPY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="s3://bucket/prefix/, a local path; globs ok")
    parser.add_argument("dst", metavar="DST", help="s3://bucket/prefix/ or a local directory")
    parser.add_argument("--endpoint-url", help="S3 endpoint for both sides")
    parser.add_argument(
        "--source-endpoint-url", help="S3 endpoint of SRC (default: --endpoint-url)"
    )
    parser.add_argument("--region", help="AWS region")
    parser.add_argument("--concurrency", type=int, default=64, help="parallel streams (64)")
    parser.add_argument("--part-size", type=int, default=16, help="multipart part size, MiB (16)")
    parser.add_argument(
        "--multipart-threshold",
        type=int,
        default=64,
        help="S3 -> S3 objects at least this many MiB use multipart (64)",
    )
    parser.add_argument(
        "-n", "--dry-run", action="store_true", help="print what would be copied; copy nothing"
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="copy only shard I of N (0-based; disjoint, together complete); "
        "'auto/N' takes I from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)",
    )
    parser.add_argument(
        "--manifest",
        metavar="LOCATION",
        help="keep a manifest of what was copied under this directory or s3://bucket/prefix/ "
        "(re-runs skip recorded objects without checking DST; progress.json says if complete)",
    )
    parser.add_argument(
        "--manifest-flush-every",
        type=int,
        default=5000,
        metavar="N",
        help="publish manifest records every N objects (and every 10 s) (5000)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_copy_args(args: argparse.Namespace) -> tuple[int, int] | None:
    """Every bad-input check, before any AWS call (raises _Refused, exit 2); the shard."""
    from zonemount_operator import locations
    from zonemount_operator.names import parse_s3_url

    if not 1 <= args.concurrency <= 1024:
        raise _Refused(f"--concurrency {args.concurrency} is out of range: use 1..1024", 2)
    if args.part_size < 5:
        raise _Refused("--part-size must be at least 5 (MiB): S3's minimum part size", 2)
    try:
        locations.check_endpoint_url(args.endpoint_url)
        locations.check_endpoint_url(args.source_endpoint_url, "--source-endpoint-url")
        for arg, what in ((args.src, "SRC"), (args.dst, "DST")):
            if locations.is_s3(arg):
                parse_s3_url(arg, what)
        shard = _parse_shard(args.shard)
        if args.manifest and locations.is_s3(args.manifest):
            parse_s3_url(args.manifest, "--manifest")
        if not (locations.is_s3(args.src) or locations.is_s3(args.dst)):
            raise _Refused("SRC or DST must be an s3:// URL (for local -> local use cp/rsync)", 2)
        if not locations.is_s3(args.src):  # a missing local SRC is bad input, found first
            locations.local_source(args.src)
    except SpecError as exc:
        raise _Refused(str(exc), 2) from None
    return shard


def _copy_ends(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(source, destination, destination client): clients from one botocore session,
    locations resolved (a listing call for S3 sources), the fast path attached."""
    import botocore.exceptions

    from zonemount_operator import locations
    from zonemount_operator.transfer import SessionOnDemand, attach_fast, lazy_s3_client

    session = SessionOnDemand()
    credentials = _credentials(session)
    dst_client = lazy_s3_client(args.endpoint_url, args.region, args.concurrency, session)
    src_endpoint = args.source_endpoint_url or args.endpoint_url
    src_client = (
        dst_client
        if src_endpoint == args.endpoint_url
        else lazy_s3_client(src_endpoint, args.region, args.concurrency, session)
    )
    try:
        source = locations.source_location(args.src, src_client)
        dest = locations.destination_location(args.dst, dst_client, source)
        attach_fast(source, credentials, args.concurrency)
        attach_fast(dest, credentials, args.concurrency)
    except SpecError as exc:
        raise _Refused(str(exc), 2) from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _Refused(_aws_message(exc, args.src)) from None
    return source, dest, dst_client


def _credentials(session: Any) -> Any:
    """The credentials the lean path signs with: static ones in the environment read as
    botocore's chain would (``sigv4.env_credentials``: no botocore session is made for them,
    so a run whose requests all take the lean path imports no ``botocore.session``);
    otherwise botocore's chain (profiles, SSO, IRSA, instance roles: refreshed by botocore).
    botocore clients, when a request needs one, resolve the same credentials themselves."""
    from zonemount_contract.sigv4 import env_credentials

    found = env_credentials(os.environ)
    if found is not None:
        return found
    import botocore.exceptions

    try:
        credentials = session.get().get_credentials()
    except botocore.exceptions.BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        raise _Refused(f"AWS credentials: {exc}") from None
    if credentials is None:
        raise _Refused(_NO_CREDENTIALS)
    return credentials


def _open_manifest(args: argparse.Namespace, dst_client: Any, shard: Any) -> Any:
    """The ``--manifest`` (None without one)."""
    if not args.manifest:
        return None
    import botocore.exceptions

    from zonemount_operator.manifest import Manifest, store_for

    try:
        return Manifest(
            store_for(args.manifest, dst_client),
            shard,
            flush_every=max(1, args.manifest_flush_every),
        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _Refused(_aws_message(exc, f"reading the manifest {args.manifest}")) from None
    except OSError as exc:
        raise _Refused(f"manifest {args.manifest}: {exc.strerror or exc}") from None


def _run_copy(
    name: str, args: argparse.Namespace, source: Any, dest: Any, options: Any, manifest: Any
) -> Any:
    """The copy with its progress bar (``--dry-run``: the plan lines on stdout)."""
    import botocore.exceptions

    from zonemount_operator.transfer import SourceObject, copy

    def plan(obj: SourceObject) -> None:
        print(f"{name} {source.describe(obj.key)} {dest.describe(obj.key)}", flush=True)

    try:
        if args.no_progress or args.dry_run:  # no bar: rich is not even imported
            return copy(source, dest, options, on_plan=plan, manifest=manifest)
        with _ProgressBar(name) as bar:
            bar._progress.console.print(f"{name} {source} -> {dest}", highlight=False)
            return copy(
                source, dest, options, on_progress=bar.update, on_plan=plan, manifest=manifest
            )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _Refused(_aws_message(exc, f"listing {args.src}")) from None
    except OSError as exc:
        raise _Refused(f"{exc.filename or args.src}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise _Refused(
            "interrupted: run 'zonemount sync' with the same arguments to resume", 130
        ) from None
    finally:
        if manifest is not None:
            manifest.close()


def _report_copy(
    name: str, args: argparse.Namespace, result: Any, shard: Any, manifest: Any
) -> int:
    """The summary lines on stderr; the exit code."""
    if result.objects_total == 0 and shard is None:
        raise _Refused(f"no objects match {args.src}: nothing to copy")
    rate = result.bytes_per_second / 1e6
    if args.dry_run:
        would = result.objects_total - result.objects_skipped
        print(
            f"{name}: dry run: {would} would be copied, {result.objects_skipped} up to date",
            file=sys.stderr,
        )
        return 0
    notes = "".join(
        f", {n} {what}"
        for n, what in (
            (result.objects_changed, "changed during the copy"),
            (result.throttled, "requests throttled and retried"),
        )
        if n
    )
    print(
        f"{name}: {result.objects_copied} copied, {result.objects_skipped} up to date, "
        f"{result.objects_failed} failed{notes}; {result.bytes_copied} bytes in "
        f"{result.elapsed:.2f}s ({rate:.1f} MB/s)",
        file=sys.stderr,
    )
    if manifest is not None:
        recorded = result.objects_copied + result.objects_skipped
        verdict = "complete" if recorded == result.objects_total else "INCOMPLETE"
        where = f"shard {shard[0]}/{shard[1]}" if shard else "all objects"
        print(
            f"{name}: {where}: {verdict}: {result.objects_total} listed, {recorded} recorded "
            f"in the manifest at {args.manifest}",
            file=sys.stderr,
        )
    if result.objects_failed:
        raise _Refused(
            f"{result.objects_failed} objects failed (first: {result.first_error}); "
            "rerun 'zonemount sync' to retry only what is missing"
        )
    return 0


def _copy_main(argv: Sequence[str], sync: bool) -> int:
    """``zonemount cp|sync``: check the arguments, resolve both ends, copy, report."""
    name = "sync" if sync else "cp"
    args = _copy_parser(name, sync).parse_args(list(argv))
    from zonemount_operator.transfer import CopyOptions, MiB

    try:
        shard = _check_copy_args(args)
        source, dest, dst_client = _copy_ends(args)
        options = CopyOptions(
            concurrency=args.concurrency,
            part_size=args.part_size * MiB,
            multipart_threshold=args.multipart_threshold * MiB,
            skip_existing=sync,
            dry_run=args.dry_run,
            shard=shard,
        )
        manifest = _open_manifest(args, dst_client, shard)
        result = _run_copy(name, args, source, dest, options, manifest)
        return _report_copy(name, args, result, shard, manifest)
    except _Refused as exc:
        return _fail(name, str(exc), exc.code)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    """``I/N`` (or ``auto/N``: I from $JOB_COMPLETION_INDEX) -> (I, N)."""
    if text is None:
        return None
    index_text, _, count_text = text.partition("/")
    if index_text == "auto":
        index_text = os.environ.get("JOB_COMPLETION_INDEX", "")
        if not index_text:
            raise SpecError("--shard auto/N needs $JOB_COMPLETION_INDEX (set in Indexed Jobs)")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise SpecError(f"--shard {text!r} is not I/N: expected e.g. --shard 3/16") from None
    if not (count >= 1 and 0 <= index < count):
        raise SpecError(f"--shard {text!r}: I must be in 0..N-1 and N at least 1")
    return index, count


def cp_main(argv: Sequence[str]) -> int:
    return _copy_main(argv, sync=False)


def sync_main(argv: Sequence[str]) -> int:
    return _copy_main(argv, sync=True)
