"""One S3 client factory (zonemount_contract.s3client) for the FUSE client, the CSI controller
and the operator: the requests it makes carry the zonemount user agent, use botocore's standard
retries, and a custom endpoint gets the local-server policy only where a caller asks for it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3
from zonemount_contract.s3client import create_client, user_agent, zonemount_version
from zonemount_csi import driver_version
from zonemount_csi.controller import s3_client_factory
from zonemount_fs.store.s3 import S3Settings, S3Store
from zonemount_operator.aws import Boto3BucketAdmin


def _sent_headers(client: Any) -> list[dict[str, str]]:
    sent: list[dict[str, str]] = []
    client.meta.events.register(
        "before-send.s3", lambda request, **_: sent.append(dict(request.headers))
    )
    return sent


def test_requests_carry_the_zonemount_user_agent(
    s3_env: dict[str, str], moto_server: LocalS3, bucket: str
) -> None:
    client = create_client(endpoint_url=moto_server.endpoint)
    sent = _sent_headers(client)
    client.head_bucket(Bucket=bucket)
    agent = sent[0]["User-Agent"]
    agent = agent.decode() if isinstance(agent, bytes) else agent
    assert user_agent() == f"zonemount/{zonemount_version()}"
    assert agent.endswith(f" {user_agent()}")
    assert driver_version() == zonemount_version()


def test_the_fuse_client_the_csi_controller_and_the_operator_build_on_it(
    s3_env: dict[str, str], moto_server: LocalS3, bucket: str
) -> None:
    store = S3Store(
        S3Settings(bucket, endpoint_url=moto_server.endpoint, connect_timeout=3, read_timeout=7)
    )._client
    controller = s3_client_factory(moto_server.endpoint, "us-east-1")
    operator = Boto3BucketAdmin(endpoint_url=moto_server.endpoint).s3("us-east-1")
    for client, timeouts in ((store, (3, 7)), (controller, (5, 30)), (operator, (10, 60))):
        config = client.meta.config
        assert config.user_agent_extra == user_agent()
        assert config.retries["mode"] == "standard"
        assert (config.connect_timeout, config.read_timeout) == timeouts
        client.head_bucket(Bucket=bucket)


def test_the_local_endpoint_policy_is_opt_in(s3_env: dict[str, str], moto_server: LocalS3) -> None:
    local = create_client(endpoint_url=moto_server.endpoint, local_endpoint=True).meta.config
    assert local.s3 == {"addressing_style": "path", "disable_s3_express_session_auth": True}
    like_aws = create_client(endpoint_url=moto_server.endpoint).meta.config
    assert not like_aws.s3  # the FUSE client's and controller's: the caller's flags decide
    on_aws = create_client(local_endpoint=True, region="us-west-2").meta.config
    assert not on_aws.s3 and on_aws.region_name == "us-west-2"
    explicit = create_client(path_style=True, express_session_auth=False, s3={"x": 1})
    assert explicit.meta.config.s3 == {
        "x": 1,
        "addressing_style": "path",
        "disable_s3_express_session_auth": True,
    }


@pytest.mark.parametrize(
    "module", ["zonemount_contract", "zonemount_contract.s3client", "zonemount_contract.sigv4"]
)
def test_importing_the_contract_loads_no_botocore(module: str) -> None:
    code = f"import sys, {module}; assert 'botocore' not in sys.modules, 'botocore imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
