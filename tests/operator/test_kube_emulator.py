"""The kmock tier's API-server behaviour (tests/operator/kube_emulator.py), checked directly.

Each behaviour here is one the operator's bugs hid behind in plain kmock (issue 13); if the
emulator stopped doing it, the regression tests that rely on it would pass for the wrong reason.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from zonemount_operator.errors import KubeError
from zonemount_operator.kube import PERSISTENTVOLUMES, S3MOUNTCLASSES, KubeClient

from tests.operator.operator_testlib import KubeApiThread

pytestmark = pytest.mark.integration

CLASS = {
    "apiVersion": "zonemount.io/v1alpha1",
    "kind": "S3MountClass",
    "metadata": {"name": "c", "uid": "client-uid", "generation": 7},
    "spec": {"bucketName": "b-bucket", "region": "us-east-1"},
}


def call(api: KubeApiThread, fn: Any) -> Any:
    async def main() -> Any:
        kube = KubeClient(api.url)
        try:
            return await fn(kube)
        finally:
            await kube.close()

    return asyncio.run(main())


def test_server_owned_metadata_generation_and_status_subresource(kube_api: KubeApiThread) -> None:
    created = call(kube_api, lambda k: k.create(S3MOUNTCLASSES, CLASS))
    meta = created["metadata"]
    assert meta["uid"] != "client-uid" and meta["generation"] == 1
    assert created["spec"]["provisioning"] == "PerClaimPrefix"  # CRD defaults applied
    rv = int(meta["resourceVersion"])

    # status through the main endpoint is ignored; through /status it is stored, no bump
    main = call(kube_api, lambda k: k.patch(S3MOUNTCLASSES, "c", {"status": {"bucketName": "x"}}))
    assert "status" not in main and main["metadata"]["resourceVersion"] == str(rv)
    sub = call(
        kube_api,
        lambda k: k.patch(S3MOUNTCLASSES, "c", {"status": {"bucketName": "x"}}, None, "status"),
    )
    assert sub["status"] == {"bucketName": "x"} and sub["metadata"]["generation"] == 1
    # a spec change bumps generation; a client-sent generation is ignored
    bumped = call(
        kube_api,
        lambda k: k.patch(
            S3MOUNTCLASSES, "c", {"metadata": {"generation": 99}, "spec": {"prefix": "p/"}}
        ),
    )
    assert bumped["metadata"]["generation"] == 2
    # a patch that changes nothing stores nothing
    versions = kube_api.versions("s3mountclasses", "c")
    call(kube_api, lambda k: k.patch(S3MOUNTCLASSES, "c", {"spec": {"prefix": "p/"}}))
    assert kube_api.versions("s3mountclasses", "c") == versions


def test_stale_resource_version_and_invalid_objects_are_refused(kube_api: KubeApiThread) -> None:
    created = call(kube_api, lambda k: k.create(S3MOUNTCLASSES, CLASS))
    rv = created["metadata"]["resourceVersion"]
    call(kube_api, lambda k: k.patch(S3MOUNTCLASSES, "c", {"spec": {"prefix": "a/"}}))
    with pytest.raises(KubeError) as conflict:
        call(
            kube_api,
            lambda k: k.patch(
                S3MOUNTCLASSES, "c", {"metadata": {"resourceVersion": rv}, "spec": {"prefix": "b/"}}
            ),
        )
    assert conflict.value.status == 409
    with pytest.raises(KubeError) as unknown:
        call(kube_api, lambda k: k.patch(S3MOUNTCLASSES, "c", {"spec": {"cache": "/tmp"}}))
    assert unknown.value.status == 400 and 'unknown field "spec.cache"' in str(unknown.value)
    with pytest.raises(KubeError) as cel:
        call(kube_api, lambda k: k.patch(S3MOUNTCLASSES, "c", {"spec": {"storageClassName": "x"}}))
    assert cel.value.status == 422 and "storageClassName is immutable" in str(cel.value)


def test_quantities_are_stored_canonical(kube_api: KubeApiThread) -> None:
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "pv"},
        "spec": {"capacity": {"storage": "1024Gi"}, "accessModes": ["ReadWriteMany"]},
    }
    stored = call(kube_api, lambda k: k.create(PERSISTENTVOLUMES, pv))
    assert stored["spec"]["capacity"]["storage"] == "1Ti"


def test_watch_resumes_after_a_resource_version_and_json_patch_tests_it(
    kube_api: KubeApiThread,
) -> None:
    created = call(kube_api, lambda k: k.create(S3MOUNTCLASSES, CLASS))
    rv = created["metadata"]["resourceVersion"]
    call(kube_api, lambda k: k.patch(S3MOUNTCLASSES, "c", {"spec": {"prefix": "a/"}}))

    async def watch_and_test_patch() -> tuple[list[str], int]:
        path = "/apis/zonemount.io/v1alpha1/s3mountclasses"
        async with aiohttp.ClientSession() as http:
            url = f"{kube_api.url}{path}?watch=true&resourceVersion={rv}"
            async with http.get(url) as resp:
                line = await asyncio.wait_for(resp.content.readline(), 10)
                while not line.strip():
                    line = await asyncio.wait_for(resp.content.readline(), 10)
                event = json.loads(line)
            stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}]
            async with http.patch(
                f"{kube_api.url}{path}/c",
                data=json.dumps(stale),
                headers={"Content-Type": "application/json-patch+json"},
            ) as patched:
                status = patched.status
        return [event["type"], event["object"]["spec"]["prefix"]], status

    first, status = asyncio.run(watch_and_test_patch())
    assert first == ["MODIFIED", "a/"]  # not a replay of the object as it was at `rv`
    assert status == 422  # kopf's optimistic JSON patch sees the conflict


def test_held_writes_land_out_of_order(kube_api: KubeApiThread) -> None:
    call(kube_api, lambda k: k.create(S3MOUNTCLASSES, CLASS))
    kube_api.hold(lambda r: "slow/" in json.dumps(r.data), 1.0)

    async def both(k: KubeClient) -> None:
        slow = asyncio.create_task(k.patch(S3MOUNTCLASSES, "c", {"spec": {"prefix": "slow/"}}))
        await asyncio.sleep(0.2)
        await k.patch(S3MOUNTCLASSES, "c", {"spec": {"prefix": "fast/"}})
        await slow

    call(kube_api, both)
    assert kube_api.object("s3mountclasses", "c")["spec"]["prefix"] == "slow/"  # sent first
