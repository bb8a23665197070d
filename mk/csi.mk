# CSI driver (issue 4): regenerate the committed gRPC stubs from the vendored CSI v1.9 proto.
# The stubs live in csi-driver/zonemount_csi/_proto/ (excluded from ruff and mypy); the generated
# `import csi_pb2` is rewritten to a package-relative import so `zonemount_csi._proto` is a
# self-contained package that does not need its directory on sys.path. mypy follows imports into
# the stubs: csi_pb2.pyi types the messages, both generated files are marked ignore-errors
# (their own strict-mode nits are not ours to fix).

CSI_PROTO_DIR := csi-driver/zonemount_csi/_proto

.PHONY: csi-proto test-csi

csi-proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I $(CSI_PROTO_DIR) \
	  --python_out=$(CSI_PROTO_DIR) --pyi_out=$(CSI_PROTO_DIR) --grpc_python_out=$(CSI_PROTO_DIR) \
	  $(CSI_PROTO_DIR)/csi.proto
	sed -i 's/^import csi_pb2 as csi__pb2$$/from . import csi_pb2 as csi__pb2/' $(CSI_PROTO_DIR)/csi_pb2_grpc.py
	@grep -q '^from \. import csi_pb2' $(CSI_PROTO_DIR)/csi_pb2_grpc.py || { echo "csi-proto: import rewrite failed"; exit 1; }
	sed -i '1i # mypy: ignore-errors' $(CSI_PROTO_DIR)/csi_pb2_grpc.py $(CSI_PROTO_DIR)/csi_pb2.pyi

# Only the CSI driver's tests (unit matrix over a real gRPC socket, controller on moto, real mounts).
test-csi: setup
	$(VENV)/bin/pytest tests/csi $(PYTEST_ARGS)

# Publish / republish / repair-after-kill-9 / unpublish latency of the node plugin on real mounts.
.PHONY: csi-measure
csi-measure: setup
	$(PY) -m tests.csi.measure_node $(CSI_MEASURE_COUNT)
