"""The tenancy policy file and its checks, without AWS (zonemount_operator.tenancy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from zonemount_operator import names, tenancy
from zonemount_operator.errors import SpecError
from zonemount_operator.tenancy import Adoption, NotAllowedError, Rules, TenancyPolicy

pytestmark = pytest.mark.unit
ACCOUNT = "123456789012"


def role(path: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:role{path}spark"


def test_defaults_allow_only_the_namespace_path_of_the_own_account() -> None:
    policy = tenancy.parse(None)
    assert policy == TenancyPolicy() == tenancy.parse({})
    policy.check_role("team-a", role("/zonemount/team-a/"), ACCOUNT, "aws")
    policy.check_role("team-a", role("/zonemount/team-a/sub/"), ACCOUNT, "aws")
    for path in ("/", "/zonemount/", "/zonemount/team-a-b/", "/zonemount/team-b/"):
        with pytest.raises(NotAllowedError) as exc:
            policy.check_role("team-a", role(path), ACCOUNT, "aws")
        assert exc.value.reason == "RoleNotAllowed"
    with pytest.raises(NotAllowedError) as exc:
        TenancyPolicy.unrestricted().check_role("a", role("/", "999999999999"), ACCOUNT, "aws")
    assert exc.value.reason == "ForeignAccountRole"
    with pytest.raises(NotAllowedError):  # another partition is another account too
        policy.check_role("a", "arn:aws-cn:iam::123456789012:role/zonemount/a/x", ACCOUNT, "aws")


def test_import_sources_listed_owned_or_refused() -> None:
    policy = tenancy.parse(
        {
            "importSources": ["s3://shared/public/", "s3://{namespace}-landing/"],
            "namespaces": {"team-a": {"importSources": ["s3://raw"]}},
        }
    )
    owners = {"owned--use1-az4--x-s3": names.Owner("u", "team-a", "x")}
    check = policy.check_import_source
    check("team-a", "s3://shared/public/x/", owners.get)
    check("team-a", "s3://team-a-landing/y/", owners.get)
    check("team-a", "s3://raw/any/", owners.get)
    check("team-a", "s3://owned--use1-az4--x-s3/", owners.get)
    for ns, url in [
        ("team-b", "s3://raw/any/"),  # team-a's addition only
        ("team-b", "s3://owned--use1-az4--x-s3/"),  # owned by team-a
        ("team-a", "s3://shared/public-secret/"),  # whole path segments
        ("team-a", "s3://shared/"),  # above the listed prefix
        ("team-b", "s3://team-a-landing/"),  # {namespace} is the caller's
    ]:
        with pytest.raises(NotAllowedError) as exc:
            check(ns, url, owners.get)
        assert exc.value.reason == "ImportSourceNotAllowed"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a mapping"),
        ({"roles": []}, "roles is not a known key"),
        ({"rolePaths": ["zonemount"]}, "is not an IAM path"),
        ({"rolePaths": "/x/"}, "must be a list of strings"),
        ({"importSources": ["https://x/"]}, "is not an s3:// URL"),
        ({"importSources": ["s3://bkt/p"]}, "must end with '/'"),
        ({"namespaces": {"a": {"roleArns": []}}}, "namespaces.a.roleArns is not a known key"),
        ({"adopt": [{"namespace": "a", "name": "b"}]}, "exactly namespace, name and bucket"),
        ({"adopt": [{"namespace": "a", "name": "b", "bucket": "plain"}]}, "not a directory"),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(doc: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        tenancy.parse(doc)


def test_load_reads_the_file_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("adopt: [{namespace: a, name: b, bucket: data--use1-az4--x-s3}]\n")
    monkeypatch.setenv(tenancy.CONFIG_ENV, str(path))
    policy = tenancy.load()
    assert policy.adoptions == (Adoption("a", "b", "data--use1-az4--x-s3"),)
    assert policy.default == Rules(role_paths=(tenancy.DEFAULT_ROLE_PATH,))
    monkeypatch.delenv(tenancy.CONFIG_ENV)
    assert tenancy.load() == TenancyPolicy()
    with pytest.raises(SpecError, match="cannot read it"):
        tenancy.load(tmp_path / "missing.yaml")
    path.write_text("rolePaths: [\n")
    with pytest.raises(SpecError, match="is not valid YAML"):
        tenancy.load(path)


def test_operator_refuses_to_start_on_a_broken_policy(tmp_path: Path) -> None:
    path = tmp_path / "tenancy.yaml"
    path.write_text("rolePaths: [zonemount]\n")
    zonemount = str(Path(sys.executable).parent / "zonemount")
    env = {"PATH": "/usr/bin:/bin", tenancy.CONFIG_ENV: str(path)}
    result = subprocess.run(
        [zonemount, "operator"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "zonemount operator: tenancy policy: rolePaths entry 'zonemount' is not an IAM path: "
        "expected /a/b/ (starting and ending with '/')"
    ]
