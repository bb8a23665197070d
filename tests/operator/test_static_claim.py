"""Static PersistentVolumes are reserved for their intended claim (issue 10).

Kubernetes binds an unreserved PV to any claim of any namespace that matches its class and
size, so a Static S3MountClass without a reservation let the fastest namespace take the
shared volume. The operator now writes ``spec.claimRef`` (namespace/name, no uid) from
``spec.claimRef`` of the S3MountClass, treats a changed reservation like any other
immutable PV field, and never replaces a PV the binder has bound (claimRef with a uid).
Against kmock over real HTTP, as in test_mountclass.
"""

from __future__ import annotations

from typing import Any

import pytest
from zonemount_operator import conditions
from zonemount_operator.errors import SpecError
from zonemount_operator.kube import PERSISTENTVOLUMES, KubeClient
from zonemount_operator.mountclass import reconcile_mountclass
from zonemount_operator.spec import parse_mountclass

from tests.operator.operator_testlib import KubeApiThread
from tests.operator.test_mountclass import SPEC, ready_bucket, run

pytestmark = pytest.mark.integration
STATIC: dict[str, Any] = {
    **SPEC,
    "provisioning": "Static",
    "claimRef": {"namespace": "team-a", "name": "shared"},
}


def test_static_pv_is_reserved_for_its_claim(kube_api: KubeApiThread) -> None:
    ready_bucket(kube_api)
    out = run(kube_api, lambda k: reconcile_mountclass("st", "uid-st", STATIC, None, 1, kube=k))
    assert out.ready, out.status
    pv = kube_api.object("persistentvolumes", "st")
    assert pv["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "team-a",
        "name": "shared",
    }
    again = run(
        kube_api, lambda k: reconcile_mountclass("st", "uid-st", STATIC, out.status, 1, kube=k)
    )
    assert again.events == []

    # Re-pointing the reservation replaces the PV while nobody is bound to it ...
    moved = {**STATIC, "claimRef": {"namespace": "team-b", "name": "shared"}}
    out = run(
        kube_api, lambda k: reconcile_mountclass("st", "uid-st", moved, out.status, 2, kube=k)
    )
    assert "replaced PersistentVolume st" in out.events
    assert kube_api.object("persistentvolumes", "st")["spec"]["claimRef"]["namespace"] == "team-b"

    # ... and never once the binder has bound the claim (its uid is in the claimRef).
    async def bind(k: KubeClient) -> None:
        claim = {"namespace": "team-b", "name": "shared", "uid": "u-1"}
        await k.patch(PERSISTENTVOLUMES, "st", {"spec": {"claimRef": claim}})

    run(kube_api, bind)
    out = run(
        kube_api, lambda k: reconcile_mountclass("st", "uid-st", STATIC, out.status, 3, kube=k)
    )
    ready = conditions.get(out.status["conditions"], "Ready")
    assert ready is not None and ready["reason"] == "PersistentVolumeInUse"
    assert kube_api.object("persistentvolumes", "st")["spec"]["claimRef"]["uid"] == "u-1"


def test_static_needs_a_claim_and_only_static_takes_one() -> None:
    without = {k: v for k, v in STATIC.items() if k != "claimRef"}
    with pytest.raises(SpecError, match=r"Static needs spec\.claimRef"):
        parse_mountclass("st", without)
    with pytest.raises(SpecError, match=r"only applies with spec\.provisioning: Static"):
        parse_mountclass("st", {**SPEC, "claimRef": {"namespace": "a", "name": "b"}})
    with pytest.raises(SpecError, match="needs both namespace and name"):
        parse_mountclass("st", {**STATIC, "claimRef": {"name": "b"}})
