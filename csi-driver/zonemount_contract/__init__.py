"""The vocabulary the three parts of zonemount share: one copy of every rule, key and option.

The FUSE client (:mod:`zonemount_fs`), the CSI driver (:mod:`zonemount_csi`) and the operator
(:mod:`zonemount_operator`) import their names, keys and mount options from here instead of
writing their own; a contract test (tests/contract/) walks operator -> StorageClass ->
CreateVolume -> NodePublishVolume -> ``zonemount mount`` argv to keep them agreeing.

* :mod:`.keys` - the driver name, volume-context and StorageClass keys, topology keys.
* :mod:`.names` - bucket (general-purpose and directory), region, AZ, AZ ID, role/KMS ARN rules.
* :mod:`.endpoint` - the endpoint-URL rule behind every ``--endpoint-url`` and ``endpointUrl``.
* :mod:`.mount_options` - the one table of ``zonemount mount`` options: the FUSE flags, the CSI
  allow-list and the operator's typed options are made from it; rules across options.
* :mod:`.aws_errors` - the one classifier of AWS errors (throttled, transient, denied, missing).
* :mod:`.cli` - the one argparse parser of every ``zonemount`` subcommand (bad input: one line).
* :mod:`.s3client` - the one botocore client factory; :mod:`.sigv4`, :mod:`.s3list` and
  :mod:`.http1` - the lean S3 paths' one signer, ListObjectsV2 reader and HTTP/1.1 client (the
  FUSE client's fast path and the copy engine's).

Invariants: standard library only (botocore imported inside :mod:`.s3client`'s factory), no
I/O on import or in any rule: :mod:`.http1`'s pools are the one place that talks to the network,
and only when a caller sends a request. No imports from the three parts (every part may
import this package; it imports none of them). Validators return plain values or raise
:class:`ValueError` subclasses; each part turns them into its own error type.
"""

from __future__ import annotations
