"""The ``ObjectStore`` seam: everything the filesystem asks of S3.

* :mod:`.base` - the protocol and its plain data types.
* :mod:`.s3` - the real implementation on botocore (threads; S3 Express session auth).
* :mod:`.memory` - an in-memory implementation for fast unit tests.
* :mod:`.faults` - a wrapper that injects failures, for error-path tests.

Every behaviour of the in-memory store is also exercised against a real S3 server on
loopback by the contract suite (tests/fs/test_store_contract.py).
"""

from .base import ListPage, ObjectInfo, ObjectStore, PutOptions

__all__ = ["ListPage", "ObjectInfo", "ObjectStore", "PutOptions"]
