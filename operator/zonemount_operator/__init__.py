"""zonemount operator: CRDs ``S3ExpressBucket`` and ``S3MountClass`` reconciled with kopf.

Dependency direction (nothing points back up):

    names, errors, conditions, spec      plain values and validation, no I/O
    aws (BucketAdmin)  kube (KubeClient)  the two control-plane seams
    bucket, mountclass                   idempotent reconcile functions over plain data
    transfer                             the bulk copy engine (import, ``zonemount cp/sync``)
    handlers                             thin kopf handlers (the only module importing kopf
                                         besides ``cli``, which starts it)
"""

GROUP = "zonemount.io"
VERSION = "v1alpha1"
CSI_DRIVER = "s3.csi.zonemount.io"
FINALIZER = "zonemount.io/finalizer"
