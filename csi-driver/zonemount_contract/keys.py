"""The CSI driver's name, the keys of the volume context (PV ``volumeAttributes``), of
StorageClass parameters and of topology.

Constants only, in one module (as mountpoint-s3-csi-driver does), so the node, the controller,
the docs and the operator agree on spelling. Keys are camelCase as in DESIGN.md.

Invariants: the node plugin refuses unknown keys unless they carry one of the
:data:`KUBERNETES_PREFIXES` (the CO adds pod info and provisioner identity there), so a typo such
as ``bucketname`` fails loudly instead of mounting the wrong thing.
"""

from __future__ import annotations

#: The CSI driver name (CSIDriver object, StorageClass provisioner, PV csi.driver).
DRIVER_NAME = "s3.csi.zonemount.io"

# --- volume context (PV spec.csi.volumeAttributes, or returned by CreateVolume) ---
BUCKET_NAME = "bucketName"
PREFIX = "prefix"
REGION = "region"
ENDPOINT_URL = "endpointUrl"
AUTHENTICATION_SOURCE = "authenticationSource"
#: IAM role assumed with the pod's service-account token when authenticationSource is "pod".
ROLE_ARN = "roleArn"

#: Local data cache of the volume (``--cache``, which a PV can never name as a path): ``disk``
#: (under the node plugin's ``--cache-dir``) or ``memory`` (under ``--memory-cache-dir``, a
#: tmpfs); absent: no cache. Created empty at mount, removed at unpublish.
CACHE_MEDIUM = "cacheMedium"
#: Bound of that cache, a Kubernetes quantity (``512Mi``, ``2Gi``; default 1Gi), at most the
#: node plugin's ``--max-cache-size``.
CACHE_SIZE_LIMIT = "cacheSizeLimit"
CACHE_DISK = "disk"
CACHE_MEMORY = "memory"
CACHE_MEDIUMS = (CACHE_DISK, CACHE_MEMORY)
#: Shared block cache bucket (``--cache-xz``). A PV attribute, i.e. the administrator's (PVs are
#: cluster objects; never a tenant's mount option): its writers decide what every reader sees.
CACHE_XZ = "cacheXz"

AUTH_DRIVER = "driver"
AUTH_POD = "pod"
AUTH_SOURCES = (AUTH_DRIVER, AUTH_POD)

VOLUME_CONTEXT_KEYS = frozenset(
    {
        BUCKET_NAME,
        PREFIX,
        REGION,
        ENDPOINT_URL,
        AUTHENTICATION_SOURCE,
        ROLE_ARN,
        CACHE_MEDIUM,
        CACHE_SIZE_LIMIT,
        CACHE_XZ,
    }
)

# --- keys the kubelet / external-provisioner add (podInfoOnMount, tokenRequests) ---
POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SERVICE_ACCOUNT_NAME = "csi.storage.k8s.io/serviceAccount.name"
#: JSON ``{"<audience>": {"token": "...", "expirationTimestamp": "..."}}`` - a secret.
SERVICE_ACCOUNT_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"
EPHEMERAL = "csi.storage.k8s.io/ephemeral"
KUBERNETES_PREFIXES = ("csi.storage.k8s.io/", "storage.kubernetes.io/")

#: Audience of the projected token used for AssumeRoleWithWebIdentity.
STS_AUDIENCE = "sts.amazonaws.com"

# --- StorageClass parameters (CreateVolume) ---
PARAM_BUCKET_NAME = "bucketName"
PARAM_BASE_PREFIX = "basePrefix"
PARAM_REGION = "region"
PARAM_ENDPOINT_URL = "endpointUrl"
PARAM_DELETE_DATA = "deleteData"
PARAM_AUTHENTICATION_SOURCE = "authenticationSource"
PARAM_ROLE_ARN = "roleArn"
PARAM_AVAILABILITY_ZONE = "availabilityZone"
#: Passed through into every volume's context as ``cacheXz`` (never part of the volume record:
#: it says how volumes are mounted, not what a volume is).
PARAM_CACHE_XZ = CACHE_XZ
PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"

STORAGE_CLASS_PARAMS = frozenset(
    {
        PARAM_BUCKET_NAME,
        PARAM_BASE_PREFIX,
        PARAM_REGION,
        PARAM_ENDPOINT_URL,
        PARAM_DELETE_DATA,
        PARAM_AUTHENTICATION_SOURCE,
        PARAM_ROLE_ARN,
        PARAM_AVAILABILITY_ZONE,
        PARAM_CACHE_XZ,
    }
)

# --- topology keys reported by NodeGetInfo and CreateVolume ---
TOPOLOGY_ZONE = "topology.kubernetes.io/zone"
TOPOLOGY_ZONE_ID = "topology.zonemount.io/zone-id"

# --- environment the CSI mounter sets for the FUSE servers it starts ---
# where `zonemount mount` keeps its upload journals (the orphan sweep at mount reads them)
STATE_DIR_ENV = "ZONEMOUNT_STATE_DIR"
# a pipe on which `zonemount mount` writes "ok" once mounted, or "error: ..." and exits
READY_FD_ENV = "ZONEMOUNT_READY_FD"
