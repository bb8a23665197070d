"""The Kubernetes API seam: a tiny async JSON client over aiohttp (kopf's own dependency).

Only what the operator writes besides its own CR status: StorageClasses, PersistentVolumes,
reading S3ExpressBuckets, and status patches for import progress. Credentials come from the
same place kopf logs in from (:func:`from_kopf_login`: in-cluster service account, else
kubeconfig), so the operator has one identity. Invariants: every call returns parsed JSON
or raises :class:`KubeError` carrying the HTTP status and the API server's message (never
the token); ``get``/``delete`` of a missing object return ``None``/``False`` instead of
raising, which is what idempotent reconcile wants. Patches are JSON merge patches.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from zonemount_operator import GROUP, VERSION
from zonemount_operator.errors import KubeError


@dataclass(frozen=True)
class ResourceRef:
    group: str
    version: str
    plural: str
    namespaced: bool

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


STORAGECLASSES = ResourceRef("storage.k8s.io", "v1", "storageclasses", namespaced=False)
PERSISTENTVOLUMES = ResourceRef("", "v1", "persistentvolumes", namespaced=False)
S3EXPRESSBUCKETS = ResourceRef(GROUP, VERSION, "s3expressbuckets", namespaced=True)
S3MOUNTCLASSES = ResourceRef(GROUP, VERSION, "s3mountclasses", namespaced=False)


class KubeClient:
    """Minimal async Kubernetes client (get/list/create/merge-patch/delete)."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        ca_path: str | None = None,
        ca_data: bytes | None = None,
        insecure: bool = False,
        cert_path: str | None = None,
        key_path: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self._ssl: ssl.SSLContext | bool = True
        if self.server.startswith("https"):
            if insecure:
                self._ssl = False
            else:
                ctx = ssl.create_default_context(
                    cafile=ca_path,
                    cadata=ca_data.decode() if ca_data else None,
                )
                if cert_path:
                    ctx.load_cert_chain(cert_path, key_path)
                self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=30)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        url = self.server + path
        data = None
        headers = {}
        if body is not None:
            import json

            data = json.dumps(body)
            headers["Content-Type"] = content_type
        try:
            async with self._http().request(
                method, url, data=data, headers=headers, ssl=self._ssl
            ) as resp:
                payload: Any = None
                if resp.content_type == "application/json":
                    payload = await resp.json()
                else:
                    await resp.read()
                return resp.status, payload
        except aiohttp.ClientError as exc:
            raise KubeError(
                f"{method} {path}: cannot reach the Kubernetes API ({type(exc).__name__})", 0
            ) from exc

    @staticmethod
    def _raise(method: str, path: str, status: int, payload: Any) -> None:
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        raise KubeError(
            f"{method} {path} failed with HTTP {status}: {message}".rstrip(": "), status
        )

    async def get(
        self, ref: ResourceRef, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        path = ref.path(namespace, name)
        status, payload = await self._request("GET", path)
        if status == 404:
            return None
        if status >= 300:
            self._raise("GET", path, status, payload)
        return dict(payload)

    async def list(self, ref: ResourceRef, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of ``ref`` (in ``namespace``, or cluster-wide)."""
        path = ref.path(namespace)
        status, payload = await self._request("GET", path)
        if status >= 300:
            self._raise("GET", path, status, payload)
        return [dict(item) for item in (payload or {}).get("items") or []]

    async def create(
        self, ref: ResourceRef, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        path = ref.path(namespace)
        status, payload = await self._request("POST", path, body)
        if status >= 300:
            self._raise("POST", path, status, payload)
        return dict(payload)

    async def patch(
        self,
        ref: ResourceRef,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any] | None:
        """JSON merge patch; ``None`` when the object does not exist."""
        path = ref.path(namespace, name, subresource)
        status, payload = await self._request("PATCH", path, patch, "application/merge-patch+json")
        if status == 404:
            return None
        if status >= 300:
            self._raise("PATCH", path, status, payload)
        return dict(payload)

    async def delete(
        self,
        ref: ResourceRef,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str | None = None,
    ) -> bool:
        """Delete; False when it was already gone. ``propagation`` (``Background``,
        ``Foreground``, ``Orphan``): what happens to its dependents; None leaves the server's
        default (for a batch/v1 Job that is Orphan: its pods would stay)."""
        path = ref.path(namespace, name)
        if propagation is not None:
            path += f"?propagationPolicy={propagation}"
        status, payload = await self._request("DELETE", path)
        if status == 404:
            return False
        if status >= 300:
            self._raise("DELETE", path, status, payload)
        return True


def kopf_login() -> Any:
    """kopf's own login (in-cluster service account, else kubeconfig) or one-line KubeError.

    ``zonemount operator`` calls it before starting kopf, so a machine without a cluster gets
    one line and exit 1 instead of a traceback retried every minute."""
    import kopf

    settings = kopf.OperatorSettings()
    try:
        info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
            settings=settings
        )
    except OSError as exc:  # e.g. KUBECONFIG names a file that does not exist
        where = f" {exc.filename}" if exc.filename else ""
        raise KubeError(
            f"cannot read the kubeconfig{where}: {exc.strerror or exc}; fix KUBECONFIG", 0
        ) from None
    except Exception as exc:  # kopf/kubernetes parse errors of a malformed kubeconfig
        raise KubeError(f"cannot use the kubeconfig: {type(exc).__name__}: {exc}", 0) from None
    if info is None:
        raise KubeError(
            "no Kubernetes credentials: run in a pod with a service account, or point KUBECONFIG "
            "(or ~/.kube/config) at a cluster",
            0,
        )
    return info


async def from_kopf_login() -> KubeClient:
    """A client with kopf's own login: in-cluster service account, else kubeconfig."""
    info = kopf_login()
    ca_data = None
    if info.ca_data:  # kubeconfig's certificate-authority-data is base64 of the PEM
        import base64

        ca_data = base64.b64decode(info.ca_data)
    return KubeClient(
        server=info.server,
        token=info.token,
        ca_path=str(info.ca_path) if info.ca_path else None,
        ca_data=ca_data,
        insecure=bool(info.insecure),
        cert_path=str(info.certificate_path) if info.certificate_path else None,
        key_path=str(info.private_key_path) if info.private_key_path else None,
    )
