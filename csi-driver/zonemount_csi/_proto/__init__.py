"""Generated CSI v1.9 gRPC stubs (``make csi-proto``); do not edit by hand."""
