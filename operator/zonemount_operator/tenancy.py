"""The cluster admin's tenancy policy: what each namespace's S3ExpressBuckets may name.

A namespace tenant writes S3ExpressBucket specs; the operator acts on them with its own AWS
credentials. This module decides, before any AWS write, whether a spec stays inside what
the cluster admin allowed that namespace:

* **roles** (``spec.access.roleArns``): only roles of the operator's own AWS account (the
  operator attaches managed policies with ``iam:AttachRolePolicy``, which cannot reach
  another account, and a foreign ARN must never be mapped to a local role of the same
  name), and only under an allowed IAM path. The default path is
  ``/zonemount/{namespace}/``: team-a may name ``role/zonemount/team-a/spark`` and nothing
  of team-b's. The role's real ARN is read back from IAM (``GetRole``) and must equal the
  ARN in the spec, because IAM role names are unique per account whatever the path, so
  ``role/zonemount/team-a/admin`` would otherwise reach a role ``admin`` at ``/``.
* **import sources** (``spec.import.source``): buckets this namespace owns (a zonemount
  directory bucket whose owner tags name this namespace) or ``s3://`` prefixes the admin
  listed, for every namespace or for one.
* **adoption**: a pre-existing bucket (a migration, or one created by a zonemount release
  before owner tags) becomes an S3ExpressBucket's only through an ``adopt`` entry naming
  the namespace, the object name and the bucket.

Where it lives and why: in the operator's settings, rendered by Helm from the release
values into a ConfigMap in the operator's namespace and read at start
(``ZONEMOUNT_TENANCY_CONFIG``; the Deployment rolls when it changes; ``zonemount reconcile``
takes the same file with ``--tenancy-config``). Only whoever can
upgrade the release or edit that namespace can change it, and tenants can neither read nor
write it; a cluster-scoped CRD would add a watch, RBAC and a second source of truth to
reconcile against for no gain in who may change it. File format (YAML)::

    rolePaths: ["/zonemount/{namespace}/"]     # every namespace; {namespace} is replaced
    importSources: ["s3://shared-datasets/public/"]   # every namespace
    namespaces:
      team-a:
        rolePaths: ["/spark/shared/"]          # added to the defaults above
        importSources: ["s3://team-a-landing/"]
    adopt:
      - {namespace: team-a, name: data, bucket: data--use1-az4--x-s3}

Invariants: a check raises :class:`NotAllowedError` (a :class:`SpecError`, so the CR gets a
Ready=False condition naming the rule and the fix, and kopf does not retry) and never
writes; ``unrestricted()`` (only for ``zonemount reconcile``, which runs with its caller's
own credentials and so confers no extra power) allows any role of the caller's account and
any source, but still never a foreign account.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zonemount_operator import names
from zonemount_operator.errors import SpecError

DEFAULT_ROLE_PATH = "/zonemount/{namespace}/"
CONFIG_ENV = "ZONEMOUNT_TENANCY_CONFIG"
_KEYS = {"rolePaths", "importSources", "namespaces", "adopt"}
_NAMESPACE_KEYS = {"rolePaths", "importSources"}
_ADOPT_KEYS = {"namespace", "name", "bucket"}


class NotAllowedError(SpecError):
    """The spec names something the cluster admin's tenancy policy does not allow."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message, reason=reason)


@dataclass(frozen=True)
class Rules:
    role_paths: tuple[str, ...] = ()
    import_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adoption:
    namespace: str
    name: str
    bucket: str


@dataclass(frozen=True)
class TenancyPolicy:
    """Parsed tenancy settings; see the module docstring for the file format."""

    default: Rules = field(default_factory=lambda: Rules(role_paths=(DEFAULT_ROLE_PATH,)))
    namespaces: Mapping[str, Rules] = field(default_factory=dict)
    adoptions: tuple[Adoption, ...] = ()
    any_role_path: bool = False
    any_import_source: bool = False

    @classmethod
    def unrestricted(cls) -> TenancyPolicy:
        """Any role of the operator's own account, any import source (``zonemount reconcile``)."""
        return cls(Rules(), {}, (), any_role_path=True, any_import_source=True)

    # -- what a namespace may name -------------------------------------------------------
    def role_paths(self, namespace: str) -> tuple[str, ...]:
        extra = self.namespaces.get(namespace, Rules())
        paths = (*self.default.role_paths, *extra.role_paths)
        return tuple(p.replace("{namespace}", namespace) for p in paths)

    def import_sources(self, namespace: str) -> tuple[str, ...]:
        extra = self.namespaces.get(namespace, Rules())
        return tuple(
            s.replace("{namespace}", namespace)
            for s in (*self.default.import_sources, *extra.import_sources)
        )

    def adoption(self, namespace: str, name: str) -> str | None:
        """The bucket an admin handed to ``namespace/name``, if any."""
        for entry in self.adoptions:
            if entry.namespace == namespace and entry.name == name:
                return entry.bucket
        return None

    def check_role(self, namespace: str, arn: str, account: str, partition: str) -> names.RoleArn:
        """The parsed ARN if ``namespace`` may name it; NotAllowedError otherwise (pure)."""
        role = names.parse_role_arn(arn)
        if role.account != account or role.partition != partition:
            raise NotAllowedError(
                f"access.roleArns entry {arn} is in AWS account {role.account}, not the "
                f"operator's account {account}: the operator only attaches policies to roles "
                "of its own account; use a role of that account (cross-account access is a "
                "bucket policy a cluster admin writes)",
                reason="ForeignAccountRole",
            )
        if self.any_role_path:
            return role
        allowed = self.role_paths(namespace)
        if not any(role.path.startswith(p) for p in allowed):
            listed = ", ".join(allowed) or "none"
            raise NotAllowedError(
                f"access.roleArns entry {arn} has IAM path {role.path}, which namespace "
                f"{namespace} may not use (allowed: {listed}): create the role under an "
                "allowed path, or ask the cluster admin to add a path to the tenancy policy "
                "(Helm value tenancy.namespaces)",
                reason="RoleNotAllowed",
            )
        return role

    def check_import_source(
        self, namespace: str, source: str, owner_of: Callable[[str], names.Owner | None]
    ) -> None:
        """Allow ``source`` if the admin listed it or ``namespace`` owns its bucket.

        ``owner_of(bucket)`` reads the bucket's owner tags (a read; called only when no
        listed prefix matches). NotAllowedError otherwise.
        """
        if self.any_import_source:
            return
        url = names.parse_s3_url(source, "spec.import.source")
        for allowed in self.import_sources(namespace):
            if _within(url, allowed):
                return
        owner = owner_of(url.bucket)
        if owner is not None and owner.namespace == namespace:
            return
        whose = f" (it belongs to {owner})" if owner is not None else ""
        raise NotAllowedError(
            f"spec.import.source {source} is not a bucket namespace {namespace} owns nor a "
            f"source the cluster admin allowed{whose}: import from a bucket of this namespace, "
            "or ask the cluster admin to list the source in the tenancy policy (Helm value "
            "tenancy.importSources)",
            reason="ImportSourceNotAllowed",
        )


def _within(url: names.S3Url, allowed: str) -> bool:
    """``url`` lies under the listed ``s3://bucket/prefix/`` (whole path segments)."""
    try:
        base = names.parse_s3_url(allowed, "tenancy importSources entry")
    except SpecError:
        return False
    if url.bucket != base.bucket:
        return False
    prefix = base.prefix if not base.prefix or base.prefix.endswith("/") else base.prefix + "/"
    return url.prefix.startswith(prefix)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"tenancy policy: {where} must be a list of strings")
    return tuple(value)


def _role_paths(value: Any, where: str) -> tuple[str, ...]:
    paths = _strings(value, where)
    for path in paths:
        if not path.startswith("/") or not path.endswith("/"):
            raise SpecError(
                f"tenancy policy: {where} entry {path!r} is not an IAM path: "
                "expected /a/b/ (starting and ending with '/')"
            )
    return paths


def _import_sources(value: Any, where: str) -> tuple[str, ...]:
    sources = _strings(value, where)
    for source in sources:
        url = names.parse_s3_url(source.replace("{namespace}", "x"), f"tenancy {where} entry")
        if url.prefix and not url.prefix.endswith("/"):
            raise SpecError(f"tenancy policy: {where} entry {source!r} must end with '/'")
    return sources


def _unknown(d: Mapping[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        raise SpecError(
            f"tenancy policy: {where}{extra[0]} is not a known key; "
            f"known: {', '.join(sorted(known))}"
        )


def parse(doc: Any) -> TenancyPolicy:
    """Build a policy from the settings document (``None``/empty: the defaults)."""
    if doc is None:
        return TenancyPolicy()
    if not isinstance(doc, Mapping):
        raise SpecError("tenancy policy: the document must be a mapping")
    _unknown(doc, _KEYS, "")
    role_paths = (
        _role_paths(doc["rolePaths"], "rolePaths") if "rolePaths" in doc else (DEFAULT_ROLE_PATH,)
    )
    default = Rules(role_paths, _import_sources(doc.get("importSources"), "importSources"))
    spaces: dict[str, Rules] = {}
    raw_spaces = doc.get("namespaces") or {}
    if not isinstance(raw_spaces, Mapping):
        raise SpecError("tenancy policy: namespaces must map a namespace to its rules")
    for ns, raw in raw_spaces.items():
        rules = raw or {}
        if not isinstance(rules, Mapping):
            raise SpecError(f"tenancy policy: namespaces.{ns} must be a mapping")
        _unknown(rules, _NAMESPACE_KEYS, f"namespaces.{ns}.")
        spaces[str(ns)] = Rules(
            _role_paths(rules.get("rolePaths"), f"namespaces.{ns}.rolePaths"),
            _import_sources(rules.get("importSources"), f"namespaces.{ns}.importSources"),
        )
    adoptions: list[Adoption] = []
    for i, entry in enumerate(doc.get("adopt") or []):
        if not isinstance(entry, Mapping) or set(entry) != _ADOPT_KEYS:
            raise SpecError(
                f"tenancy policy: adopt[{i}] must have exactly namespace, name and bucket"
            )
        bucket = str(entry["bucket"])
        if names.parse_directory_bucket(bucket) is None:
            raise SpecError(
                f"tenancy policy: adopt[{i}].bucket {bucket!r} is not a directory bucket name "
                "(base--azid--x-s3)"
            )
        adoptions.append(Adoption(str(entry["namespace"]), str(entry["name"]), bucket))
    return TenancyPolicy(default, spaces, tuple(adoptions))


def load(path: str | os.PathLike[str] | None = None) -> TenancyPolicy:
    """Read the settings file (``path``, else ``$ZONEMOUNT_TENANCY_CONFIG``, else defaults)."""
    where = path if path is not None else os.environ.get(CONFIG_ENV)
    if not where:
        return TenancyPolicy()
    try:
        text = Path(where).read_text()
    except OSError as exc:
        raise SpecError(f"tenancy policy {where}: cannot read it ({exc.strerror})") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise SpecError(f"tenancy policy {where} is not valid YAML: {first}") from exc
    return parse(doc)
