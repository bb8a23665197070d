"""A scripted stand-in for docker, kind, kubectl and helm, to walk e2e/run.sh end to end here.

No Docker engine exists on these machines, so tests/e2e/test_e2e_walkthrough.py runs the real
run.sh with this program on PATH under the four tool names. It is a stand-in for the
*cluster*, not for AWS: `kubectl exec deploy/moto -- python - ...` runs e2e/moto_ctl.py for real
against a real moto server (MOTO_ENDPOINT), and where the cluster would act on S3 (the operator
creating and deleting the bucket, the pods writing files) this program does the same S3 calls
on that moto server, so run.sh's checks of the bucket's contents are real checks.

It answers exactly the queries run.sh and lib.sh make (unknown ones exit 97 naming
themselves, so a changed script cannot pass by accident) and keeps a little state in
$FAKE_STATE (calls are serialised with a lock file): node labels, deleted objects, and a log
of every call. FAKE_FAIL=<name> makes that pod end in phase Failed (or that SparkApplication
FAILED); FAKE_SPARK=1 pretends spark-operator is installed.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

STATE = Path(os.environ["FAKE_STATE"])
MOTO = os.environ["MOTO_ENDPOINT"]
WORKERS = ["zonemount-e2e-worker", "zonemount-e2e-worker2"]
BUCKET = "e2e-scratch--use1-az4--x-s3"
PV_PREFIX = {
    "pv-claim-a": "claims/zonemount-e2e/claim-a-data/",
    "pv-claim-b": "claims/zonemount-e2e/claim-b-data/",
}


def load() -> dict[str, Any]:
    if STATE.exists():
        state: dict[str, Any] = json.loads(STATE.read_text())
        return state
    return {"labels": {w: {} for w in WORKERS}, "deleted": [], "calls": []}


def s3() -> Any:
    import boto3  # lazily: most calls need neither boto3 nor yaml, and each call is a process

    os.environ["AWS_S3_DISABLE_EXPRESS_SESSION_AUTH"] = "true"
    factory: Any = boto3.client
    return factory(
        "s3",
        endpoint_url=MOTO,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto's dummy credentials
    )


def operator_creates_bucket() -> None:
    s3().create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={
            "Location": {"Type": "AvailabilityZone", "Name": "use1-az4"},
            "Bucket": {"Type": "Directory", "DataRedundancy": "SingleAvailabilityZone"},
        },
    )


def operator_deletes_bucket() -> None:
    client = s3()
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def pods_write(manifest: str) -> None:
    client = s3()
    if manifest == "static-writer.yaml":
        for key in (
            "static/run/hello.txt",
            "static/run/blob.bin",
            "static/run/committed/part-00000",
        ):
            client.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    elif manifest == "per-pod-claims.yaml":
        for pv, prefix in PV_PREFIX.items():
            owner = pv.removeprefix("pv-")
            client.put_object(Bucket=BUCKET, Key=f"{prefix}owner-{owner}", Body=owner.encode())


def objects_in(path: str) -> list[tuple[str, str, str]]:
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    return [(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs]


def option(args: list[str], name: str) -> str:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return ""


def kubectl(args: list[str], state: dict[str, Any]) -> int:
    cmd = " ".join(args)
    out = option(args, "-o")
    words = [a for a in args if not a.startswith("-")]
    # drop the values of options that take one
    for flag in ("-n", "-o", "-l", "-L", "--field-selector", "-f"):
        if flag in args:
            value = args[args.index(flag) + 1]
            if value in words:
                words.remove(value)
    verb = words[0] if words else ""
    deleted = set(state["deleted"])
    if verb in {"apply", "label", "wait", "describe"} or "rollout status" in cmd:
        if verb == "apply" and option(args, "-f") not in {"", "-"}:
            name = Path(option(args, "-f")).name
            if name == "zonemount-e2e.yaml":
                operator_creates_bucket()
            pods_write(name)
        if verb == "label":
            node = words[2]
            for pair in words[3:]:
                key, value = pair.split("=", 1)
                state["labels"][node][key] = value
        return 0
    if verb == "create":  # namespace / secret --dry-run=client -o yaml
        print("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x")
        return 0
    if verb == "delete" and option(args, "-f"):
        return 0  # the examples' objects
    if verb == "delete":
        kind, names = words[1], words[2:]
        for name in names:
            deleted.add(f"{kind}/{name}")
            if kind == "pod" and name.startswith("claim-"):
                deleted.add(f"pv/pv-{name}")
            if kind == "s3mountclass":
                deleted.add(f"storageclass/{name}")
            if kind == "s3expressbucket":
                operator_deletes_bucket()
        state["deleted"] = sorted(deleted)
        return 0
    if verb == "exec":
        if "deploy/moto" in args:
            rest = args[args.index("--") + 1 :]
            assert rest[:2] == ["python", "-"], rest
            return subprocess.run([sys.executable, "-", *rest[2:]], check=False).returncode
        return 0  # static-survivor reads its volume
    if verb == "logs":
        pod = words[1]
        print({"static-writer": "WRITER-OK", "static-reader": "READER-OK"}.get(pod, "CLAIM-OK"))
        return 0
    if verb != "get":
        print(f"fake kubectl: unexpected command: {cmd}", file=sys.stderr)
        return 97
    what = words[1] if len(words) > 1 else ""
    if "--raw" in args:
        print("# HELP zonemount_csi_published_volumes\nzonemount_csi_published_volumes 2")
        return 0
    if what == "nodes" and "!node-role.kubernetes.io/control-plane" in cmd:
        print("\n".join(WORKERS))
        return 0
    if what in {"nodes", "csidriver", "events"} or what.startswith(("all,", "s3expressbuckets,")):
        print(f"(fake {what} table)")
        return 0
    if what == "csinode":
        print('["topology.kubernetes.io/zone","topology.zonemount.io/zone-id"]')
        return 0
    if what == "node":
        print(state["labels"][words[2]].get("topology.kubernetes.io/zone", ""))
        return 0
    if what == "s3expressbucket":
        field = {"{.status.bucketName}": BUCKET, "{.status.availabilityZone}": "us-east-1d"}
        print(field[out.removeprefix("jsonpath=")], end="")
        return 0
    if what in {"storageclass", "pv"} and f"{what}/{words[2]}" in deleted:
        print(f'Error from server (NotFound): {what} "{words[2]}" not found', file=sys.stderr)
        return 1
    if what == "storageclass":
        print(
            {"jsonpath={.provisioner}": "s3.csi.zonemount.io"}.get(
                out,
                '[{"matchLabelExpressions":[{"key":"topology.kubernetes.io/zone","values":["us-east-1d"]}]}]',
            ),
            end="",
        )
        return 0
    if what == "pod":
        pod = words[2]
        if out == "jsonpath={.status.phase}":
            print("Failed" if os.environ.get("FAKE_FAIL") == pod else "Succeeded", end="")
        elif out == "jsonpath={.spec.nodeName}":
            print(WORKERS[0], end="")
        return 0
    if what == "pods" and "-A" in args:
        print("zonemount-system zonemount-node-abcde")
        return 0
    if what == "pods":
        print("zonemount-node-abcde", end="")
        return 0
    if what == "endpoints":
        print("10.244.1.7", end="")
        return 0
    if what == "pvc":
        claims = words[2:]
        print(" ".join(f"pv-{c.removesuffix('-data')}" for c in claims), end="")
        return 0
    if what == "pv":
        print(PV_PREFIX[words[2]] if "prefix" in out else "", end="")
        return 0
    if what == "crd":  # spark-operator's CRD
        return 0 if os.environ.get("FAKE_SPARK") == "1" else 1
    if what == "sparkapplication":
        print("FAILED" if os.environ.get("FAKE_FAIL") == words[2] else "COMPLETED", end="")
        return 0
    if option(args, "-f"):
        for kind, namespace, name in objects_in(option(args, "-f")):
            print(f"{kind} {namespace} {name}")
        return 0
    print(f"fake kubectl: unexpected query: {cmd}", file=sys.stderr)
    return 97


def main() -> int:
    tool, args = Path(sys.argv[1]).name, sys.argv[2:]
    if tool == "kubectl" and option(args, "-f") == "-":
        sys.stdin.read()  # before the lock: the writer of this pipe is another fake call
    with open(f"{STATE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # run.sh pipes one fake call into another
        return run(tool, args)


def run(tool: str, args: list[str]) -> int:
    state = load()
    state["calls"].append([tool, *args])
    code = 0
    if tool == "kubectl":
        code = kubectl(args, state)
    elif tool == "kind":
        if args[:1] == ["version"]:
            print("kind v0.27.0 go1.24 linux/amd64")
        elif args[:2] == ["create", "cluster"]:
            Path(option(args, "--kubeconfig")).write_text("apiVersion: v1\nkind: Config\n")
    elif tool == "helm":
        if args[:2] == ["version", "--short"]:
            print("v4.1.4+fake")
    elif tool == "docker":
        pass  # info, build: succeed
    STATE.write_text(json.dumps(state))
    return code


if __name__ == "__main__":
    sys.exit(main())
