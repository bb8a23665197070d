"""zonemount operator: CRDs ``S3ExpressBucket`` and ``S3MountClass`` reconciled with kopf.

Dependency direction (nothing points back up):

    names, errors, conditions, spec      plain values and validation, no I/O
    aws (BucketAdmin)  kube (KubeClient)  the two control-plane seams
    bucket, mountclass                   idempotent reconcile functions over plain data
    transfer                             the bulk copy engine (import, ``zonemount cp/sync``)
    handlers                             thin kopf handlers (the only module importing kopf
                                         besides ``cli``, which starts it)

The CSI driver name and the StorageClass / volume-context keys come from
:mod:`zonemount_contract` (shared with the CSI driver).
"""

from zonemount_contract.keys import DRIVER_NAME

GROUP = "zonemount.io"
VERSION = "v1alpha1"
CSI_DRIVER = DRIVER_NAME
FINALIZER = "zonemount.io/finalizer"
