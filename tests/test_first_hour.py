"""The first hour of a new user, as the README tells it, on the installed console script.

Drives what a newcomer types after ``make setup`` (``.venv/bin/zonemount``): the top-level
help, the local path of README "Try it locally" (``zonemount local-s3``, then the exact
credentials and ``zonemount mount`` line it prints, a real FUSE mount against it, Ctrl-C),
and the bad inputs a newcomer trips on - each must end with one line naming the problem and
the fix, the documented exit code (2 bad input, 1 the work failed) and no traceback.
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from zonemount_cli.servers import LocalS3

pytestmark = pytest.mark.integration
ZONEMOUNT = str(Path(sys.executable).parent / "zonemount")
README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _is_mounted(path: Path) -> bool:
    return any(
        line.split()[4] == str(path)
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_top_level_help_lists_every_readme_subcommand() -> None:
    result = subprocess.run([ZONEMOUNT, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    readme = README.read_text()
    for name in set(re.findall(r"`zonemount ([a-z][a-z0-9-]+)", readme)):
        assert f"  {name} " in result.stdout, f"README names 'zonemount {name}'"


def _readme_commands(program: str) -> list[list[str]]:
    """Every ``program ...`` line of the README's bash blocks, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and Path(words[0]).name == program:
                commands.append(words)
    return commands


def test_readme_mount_lines_are_accepted_by_the_parser() -> None:
    from zonemount_fs.options import parse_args

    lines = [words for words in _readme_commands("zonemount") if words[1] == "mount"]
    assert len(lines) >= 4, "the README's mount examples"
    for words in lines:
        parse_args(words[2:])  # raises ConfigError (or exits 2) on a flag the README got wrong


def test_readme_mount_s3_flag_table_matches_mount_help() -> None:
    readme = README.read_text()
    table = readme[readme.index("### Switching from mount-s3") :].split("\n## ", 1)[0]
    help_text = subprocess.run(
        [ZONEMOUNT, "mount", "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    flags = set()
    for row in table.splitlines()[4:]:
        cells = row.split("|")
        if len(cells) > 3:
            ours = cells[1] if cells[2].strip() == "same" else cells[2]
            flags |= set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", ours))
    assert len(flags) > 25
    assert sorted(f for f in flags if not re.search(rf"(^|[\s,]){f}[\s,]", help_text)) == []


def test_try_it_locally_prints_a_mount_line_that_works(tmp_path: Path) -> None:
    """README "Try it locally": every printed command is run exactly as printed."""
    mnt = tmp_path / "mnt"
    server = subprocess.Popen(
        [ZONEMOUNT, "local-s3", "--mountpoint", str(mnt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stderr is not None
    try:
        printed: list[str] = []
        for line in server.stdout:
            printed.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        assert printed and printed[-1].startswith("Press Ctrl-C"), server.stderr.read()
        commands = [line.strip() for line in printed if line.startswith("  ")]
        export = next(c for c in commands if c.startswith("export "))
        env = dict(word.split("=", 1) for word in shlex.split(export)[1:])
        assert env["AWS_ACCESS_KEY_ID"] == "test"
        env |= {"PATH": f"{Path(ZONEMOUNT).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
        endpoint = re.search(r"http://127\.0\.0\.1:(\d+)", printed[0])
        assert endpoint is not None, printed[0]
        port = int(endpoint.group(1))
        for command in commands[1:]:  # mkdir, mount, echo && ls, zonemount cp, fusermount3 -u
            if command.startswith("fusermount3"):
                assert _is_mounted(mnt)
                assert (mnt / "hello.txt").read_text() == "hello\n"
                bucket = LocalS3("moto", endpoint.group(0), server, tmp_path, tmp_path / "log")
                client: Any = bucket.client()
                body = client.get_object(Bucket="my-bucket", Key="hello.txt")["Body"].read()
                assert body == b"hello\n", "the file is an object in the bucket"
            result = subprocess.run(
                command, shell=True, env=env, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0, f"{command}: {result.stderr}"
        assert not _is_mounted(mnt)
        assert (tmp_path / "mnt-copy" / "hello.txt").read_text() == "hello\n", "zonemount cp"
        server.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert server.wait(timeout=60) == 0
        err = server.stderr.read()
        assert "SIGINT received: stopping moto" in err
        assert "Traceback" not in err
        assert not _port_open(port), "the S3 server stopped with it"
    finally:
        if _is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)  # waits, drains and closes both pipes


def _bad_yaml(tmp_path: Path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: S3ExpressBucket\nmetadata:\n  name: x\n spec: [\n")
    return str(path)


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


BUCKET = str(EXAMPLES / "s3expressbucket-minimal.yaml")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["reconcile", "-f", "{bad_yaml}"], 2, ["bad.yaml:4:2: not valid YAML"]),
        (
            ["reconcile", "-f", BUCKET, "--endpoint-url", "notaurl"],
            2,
            ["--endpoint-url", "'notaurl'", "http://"],
        ),
        (
            [
                *("csi-node", "--endpoint", "unix:///tmp/zm-fh.sock", "--node-id", "n"),
                *("--zone", "z", "--kubelet-dir", "/nonexistent-kubelet"),
            ],
            1,
            ["mount the host's kubelet directory into the container at that path"],
        ),
        (
            [
                *("csi-controller", "--endpoint", "unix:///tmp/zm-fh-c.sock"),
                *("--allowed-endpoint-url", "notaurl"),
            ],
            2,
            ["--allowed-endpoint-url", "'notaurl'", "http://"],
        ),
        (["local-s3", "--data-dir", "/tmp/x"], 2, ["--data-dir needs --server seaweedfs"]),
        (["local-s3", "--bucket", "Bad_Name"], 2, ["bucket name 'Bad_Name' is invalid"]),
        (["local-s3", "--port", "{busy_port}"], 2, ["is in use", "--port"]),
        (["mount", "my-bucket"], 2, ["DIRECTORY"]),
        (["no-such-command"], 2, ["unknown command 'no-such-command'"]),
    ],
)
def test_bad_input_is_one_line_with_the_fix(
    tmp_path: Path, args: list[str], code: int, words: list[str]
) -> None:
    sock, busy = _busy_port()
    with sock:
        argv = [a.format(bad_yaml=_bad_yaml(tmp_path), busy_port=busy) for a in args]
        result = subprocess.run(
            [ZONEMOUNT, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    assert "Traceback" not in result.stderr
    assert result.returncode == code, result.stderr
    first = result.stderr.splitlines()[0] if result.stderr else ""
    assert first.startswith("zonemount"), result.stderr
    for word in words:
        assert word in first, f"{word!r} not in {first!r}"
    if args[0] != "no-such-command":  # that one appends the usage to its one line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
