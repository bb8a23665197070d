"""The contract tests run the real CSI controller and node plugin: their fixtures."""

from tests.csi.conftest import (  # noqa: F401 - pytest fixtures, used by name
    controller,
    controller_factory,
    node_plugin_factory,
    workdir,
)
