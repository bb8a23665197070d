"""zonemount_fs: the embedded FUSE client and its S3 data plane.

Dependency direction (after Mountpoint): ``store`` (S3 client seam) -> ``core`` (the
filesystem, no FUSE in it) -> ``fuse_adapter`` (thin pyfuse3 layer) -> ``cli``.
"""
