"""`embedtune.tools.remote`: URL building and checks, the git and DVC configuration it writes,
then a real push and pull.

The end-to-end tests stand in for DagsHub with a bare git repository and moto's S3 server on
127.0.0.1, run one shrunk experiment, push it, and pull it into fresh clones.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from embedtune.errors import EmbedtuneError
from embedtune.tools import remote
from tests.helpers import SHRUNK, cli_env, copy_run
from tests.helpers.remote import git_remote_url, make_small_repo

# Recognisable, so a leak shows up in a grep; made at run time, so this file does not hold it.
TOKEN = f"FAKE-dagshub-token-{secrets.token_hex(8)}"
EXP = "shared-run"
ADAPTER = "models/tuned/model.safetensors"
EVAL = "metrics/eval.json"

# --- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["alice/my-repo", "Org_1/embed.tune", "a/b"])
def test_parse_repo_accepts_owner_and_repo(spec):
    assert remote.parse_repo(spec) == tuple(spec.split("/"))


@pytest.mark.parametrize(
    "spec",
    ["", "alice", "alice/", "/repo", "a/b/c", "alice/my repo", "alice/-x", "al:ice/r", "../r"],
)
def test_parse_repo_refuses_other_shapes(spec):
    with pytest.raises(EmbedtuneError, match="expected OWNER/REPO"):
        remote.parse_repo(spec)


def test_parse_repo_refuses_git_suffix():
    with pytest.raises(EmbedtuneError, match="without '.git': alice/r$"):
        remote.parse_repo("alice/r.git")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://dagshub.com", "https://dagshub.com"),
        ("http://127.0.0.1:3000/", "http://127.0.0.1:3000"),
        ("https://host/sub/path//", "https://host/sub/path"),
    ],
)
def test_check_url_strips_trailing_slashes(url, expected):
    assert remote.check_url("--host", url) == expected


@pytest.mark.parametrize("url", ["dagshub.com", "ftp://host", "https://", "https://h/a b", ""])
def test_check_url_refuses_other_urls(url):
    with pytest.raises(
        EmbedtuneError, match=f"^--host must be an http:// or https:// URL, got {url!r}"
    ):
        remote.check_url("--host", url)


def test_dagshub_urls_default_host():
    urls = remote.dagshub_urls("alice", "r")
    assert urls.git == "https://dagshub.com/alice/r.git"
    assert urls.endpoint == "https://dagshub.com/alice/r.s3"


def test_dagshub_urls_other_host_and_overrides():
    urls = remote.dagshub_urls("alice", "r", host="http://127.0.0.1:3000/")
    assert urls == remote.RemoteUrls(
        "http://127.0.0.1:3000/alice/r.git", "http://127.0.0.1:3000/alice/r.s3"
    )
    urls = remote.dagshub_urls("a", "r", git_url="/srv/r.git", endpoint_url="http://127.0.0.1:9/")
    assert urls == remote.RemoteUrls("/srv/r.git", "http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "dagshub.com"}, "--host must be an http"),
        ({"host": "ftp://dagshub.com"}, "--host must be an http"),
        ({"endpoint_url": "127.0.0.1:9"}, "--endpoint-url must be an http"),
        ({"git_url": " "}, "--git-url must not be empty"),
        ({"git_url": "--mirror=push"}, "--git-url must be a URL or a path, not an option"),
        ({"git_url": "-uevil"}, "--git-url must be a URL or a path, not an option"),
    ],
)
def test_dagshub_urls_refuses_bad_urls(kwargs, message):
    with pytest.raises(EmbedtuneError, match=message):
        remote.dagshub_urls("a", "r", **kwargs)


def _no_prompt(text: str) -> str:
    raise AssertionError("prompted although no terminal")


def test_token_from_environment_wins():
    env = {"DAGSHUB_TOKEN": f" {TOKEN}\n"}
    assert remote.resolve_token(env, interactive=True, prompt=_no_prompt) == TOKEN


@pytest.mark.parametrize("env", [{}, {"DAGSHUB_TOKEN": ""}, {"DAGSHUB_TOKEN": "  "}])
def test_no_token_without_terminal_names_the_variable(env):
    with pytest.raises(EmbedtuneError, match="set DAGSHUB_TOKEN"):
        remote.resolve_token(env, interactive=False, prompt=_no_prompt)


def test_token_prompted_in_a_terminal():
    asked = []
    token = remote.resolve_token({}, True, lambda text: asked.append(text) or TOKEN)
    assert token == TOKEN
    assert asked == ["DagsHub token (input hidden): "]
    with pytest.raises(EmbedtuneError, match="no DagsHub token entered"):
        remote.resolve_token({}, True, lambda text: "  ")


@pytest.mark.parametrize("bad", ["abc SECRET", "abc\tSECRET", "abc\x00SECRET"])
def test_malformed_token_refused_without_echoing_it(bad):
    with pytest.raises(EmbedtuneError, match="DAGSHUB_TOKEN contains spaces") as err:
        remote.resolve_token({"DAGSHUB_TOKEN": bad}, False, _no_prompt)
    assert "SECRET" not in str(err.value)
    with pytest.raises(EmbedtuneError, match="the token entered contains spaces") as err:
        remote.resolve_token({}, True, lambda text: bad)
    assert "SECRET" not in str(err.value)


def test_token_only_in_local_section():
    shared, local = remote.dvc_sections("https://dagshub.com/a/r.s3", TOKEN)
    assert shared == {
        "url": "s3://dvc",
        "endpointurl": "https://dagshub.com/a/r.s3",
        "verify": "true",
    }
    assert TOKEN not in repr(shared)
    # Complete on its own: never a stale section without `url`.
    assert local == {**shared, "access_key_id": TOKEN, "secret_access_key": TOKEN}


def test_next_steps_list_the_push_commands():
    text = remote.next_steps("main", commit_config=True)
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    assert lines[1:5] == [
        'git add .dvc/config && git commit -m "DVC remote on DagsHub"',
        "git push -u origin main",
        "dvc push",
        "dvc exp push origin <exp>",
    ]
    assert "git add" not in remote.next_steps("dev", commit_config=False)
    assert "git push -u origin dev" in remote.next_steps("dev", commit_config=False)


# --- side effects in a small git + DVC repository (no pipeline run) ------------------------


@pytest.fixture
def small_repo(tmp_path) -> Path:
    return make_small_repo(tmp_path / "repo")


def test_find_repo_from_a_subfolder(small_repo):
    (small_repo / "src/deep").mkdir(parents=True)
    top, dvc_dir = remote.find_repo(small_repo / "src/deep")
    assert (top, dvc_dir) == (small_repo.resolve(), (small_repo / ".dvc").resolve())


def test_find_repo_outside_dvc(tmp_path):
    with pytest.raises(EmbedtuneError, match="is not inside a DVC repository"):
        remote.find_repo(tmp_path)


def test_find_repo_dvc_without_git(tmp_path, monkeypatch):
    (tmp_path / "plain/.dvc").mkdir(parents=True)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above
    with pytest.raises(EmbedtuneError, match=r"plain is not a git repository"):
        remote.find_repo(tmp_path / "plain")


def test_set_git_remote_adds_then_repoints(small_repo):
    assert remote.set_git_remote(small_repo, "/first.git") is None
    assert git_remote_url(small_repo) == "/first.git"
    assert remote.set_git_remote(small_repo, "/second.git") == "/first.git"
    assert git_remote_url(small_repo) == "/second.git"


def test_set_git_remote_never_passes_the_url_as_an_option(small_repo):
    assert remote.set_git_remote(small_repo, "--mirror=push") is None  # after `--`: a URL
    assert git_remote_url(small_repo) == "--mirror=push"
    assert remote.set_git_remote(small_repo, "--push") == "--mirror=push"
    assert git_remote_url(small_repo) == "--push"


def test_cli_refuses_a_git_url_that_is_an_option(small_repo):
    """The probe's command line, through the installed `embedtune` script."""
    exe = shutil.which("embedtune", path=str(Path(sys.executable).parent))
    env = {**cli_env(small_repo / "src"), "DAGSHUB_TOKEN": TOKEN}
    args = [exe, "remote", "dagshub", "o/r", "--git-url=--mirror=push"]
    proc = subprocess.run(
        args, cwd=small_repo, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "embedtune remote dagshub: error: --git-url must be a URL or a path, not an option: "
        "got '--mirror=push' (write a path starting with '-' as ./-name)\n"
    )
    assert git_remote_url(small_repo) == ""  # nothing changed
    assert not (small_repo / ".dvc/config.local").exists()


def test_check_local_config_ignored(small_repo):
    path = remote.check_local_config_ignored(small_repo, small_repo / ".dvc")
    assert path == small_repo / ".dvc/config.local"
    (small_repo / ".dvc/.gitignore").write_text("/tmp\n")
    with pytest.raises(EmbedtuneError, match=r"\.dvc/config\.local is tracked or not ignored"):
        remote.check_local_config_ignored(small_repo, small_repo / ".dvc")


def test_tracked_config_local_is_refused_even_if_ignored(small_repo):
    (small_repo / ".dvc/config.local").write_text("")
    subprocess.run(["git", "add", "-f", ".dvc/config.local"], cwd=small_repo, check=True)
    with pytest.raises(EmbedtuneError, match="tracked or not ignored"):
        remote.check_local_config_ignored(small_repo, small_repo / ".dvc")


def test_write_dvc_remote_keeps_other_settings(small_repo):
    shared, local = remote.dvc_sections("http://127.0.0.1:9", TOKEN)
    remote.write_dvc_remote(small_repo / ".dvc", shared, local)
    config = (small_repo / ".dvc/config").read_text()
    assert "analytics = false" in config
    assert TOKEN not in config
    local_path = small_repo / ".dvc/config.local"
    assert stat.S_IMODE(local_path.stat().st_mode) == 0o600
    assert local_path.read_text().count(TOKEN) == 2


def test_setup_dagshub_report(small_repo, monkeypatch):
    monkeypatch.chdir(small_repo)
    report = remote.setup_dagshub("alice/r", TOKEN, small_repo)
    assert TOKEN not in report
    lines = report.splitlines()
    assert lines[:3] == [
        "git remote origin: https://dagshub.com/alice/r.git",
        "DVC remote origin (default): s3://dvc at https://dagshub.com/alice/r.s3, verify true",
        "token: .dvc/config.local only (git-ignored)",
    ]
    assert lines[3:] == remote.next_steps("main", commit_config=True).splitlines()

    # Run again after committing the shared config: nothing to commit, the old URL is shown.
    subprocess.run(["git", "add", ".dvc/config"], cwd=small_repo, check=True)
    env = cli_env(small_repo / "src")
    subprocess.run(["git", "commit", "-qm", "remote"], cwd=small_repo, check=True, env=env)
    again = remote.setup_dagshub("alice/r", TOKEN, small_repo, git_url="/srv/mirror.git")
    assert again.splitlines()[0] == (
        "git remote origin: /srv/mirror.git (was https://dagshub.com/alice/r.git)"
    )
    assert "git add" not in again
    # Another repository: its endpoint changes .dvc/config, which is to be committed again.
    assert "git add .dvc/config" in remote.setup_dagshub("bob/r", TOKEN, small_repo)


def test_setup_dagshub_refuses_before_changing_anything(small_repo):
    (small_repo / ".dvc/.gitignore").write_text("/tmp\n")
    before = (small_repo / ".dvc/config").read_text()
    with pytest.raises(EmbedtuneError, match="not ignored by git"):
        remote.setup_dagshub("alice/r", TOKEN, small_repo)
    assert (small_repo / ".dvc/config").read_text() == before
    assert git_remote_url(small_repo) == ""
    assert not (small_repo / ".dvc/config.local").exists()


# --- end to end: bare git repository + moto S3 on 127.0.0.1 ------------------------------


@dataclass
class Shared:
    """The pushed state every end-to-end test starts from."""

    work: Path  # the repository that ran the experiment and pushed it
    bare: Path  # stands in for DagsHub's git
    endpoint: str  # stands in for DagsHub's S3
    tmp: Path


def _run(args: list[str], cwd: Path, check: bool = True, token: bool = False):
    """Run a command as a user would; whatever it prints must not hold the token."""
    env = cli_env(cwd / "src")
    for name in [n for n in env if n.startswith("AWS_") or n == "DAGSHUB_TOKEN"]:
        del env[name]
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if token:
        env["DAGSHUB_TOKEN"] = TOKEN
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert TOKEN not in proc.stdout + proc.stderr, f"{' '.join(args)} printed the token"
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _configure(shared: Shared, cwd: Path) -> subprocess.CompletedProcess:
    args = ["embedtune", "remote", "dagshub", "owner/repo", "--git-url", str(shared.bare)]
    return _run([*args, "--endpoint-url", shared.endpoint], cwd, token=True)


def _s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's standalone S3 server on a free port of 127.0.0.1, with the bucket `dvc`."""
    pytest.importorskip("moto.server", reason="needs moto[server]")
    pytest.importorskip("dvc_s3", reason="needs dvc-s3")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto server did not start on {endpoint}")
                time.sleep(0.2)
        _s3_client(endpoint).create_bucket(Bucket="dvc")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, s3_endpoint, shrunk_run) -> Shared:
    """Configure, run one shrunk experiment, then push as the printed next steps say. The run
    is the session's shrunk run, copied: `dvc exp run` finds every stage up to date and records
    the experiment."""
    tmp = tmp_path_factory.mktemp("embedtune-remote")
    (tmp / "work").mkdir()
    shared = Shared(work=tmp / "work", bare=tmp / "dagshub.git", endpoint=s3_endpoint, tmp=tmp)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(shared.bare)], check=True)
    work = copy_run(shrunk_run, shared.work)

    printed = _configure(shared, work).stdout
    assert "git add .dvc/config" in printed
    _run(["git", "add", ".dvc/config"], work)
    _run(["git", "commit", "-qm", "DVC remote on DagsHub"], work)
    _run(["dvc", "exp", "run", "-n", EXP, *SHRUNK], work)
    _run(["git", "push", "-u", "origin", "main"], work)
    _run(["dvc", "exp", "push", "origin", EXP], work)
    _run(["dvc", "push"], work)
    return shared


def _workspace_files_with_token(repo: Path) -> list[str]:
    """Files that git tracks or would track (`git add -A`) holding the token."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [n for n in listed.split("\0") if n and TOKEN.encode() in (repo / n).read_bytes()]


def _clone(shared: Shared, name: str) -> Path:
    dest = shared.tmp / name
    _run(["git", "clone", "-q", str(shared.bare), str(dest)], shared.tmp)
    _configure(shared, dest)
    return dest


def _pull_experiment(shared: Shared, clone: Path) -> None:
    """Pull the experiment into a clone: the token stays in its git-ignored config.local."""
    _run(["dvc", "exp", "pull", "origin", EXP], clone)
    _run(["dvc", "exp", "apply", EXP], clone)
    _run(["dvc", "pull"], clone)
    assert _workspace_files_with_token(clone) == [], clone


@pytest.mark.slow
def test_experiment_pulled_into_a_fresh_clone_is_byte_identical(pushed):
    clone = _clone(pushed, "clone")
    assert not (clone / EVAL).exists()  # main holds the remote, the experiment holds results
    _pull_experiment(pushed, clone)
    for path in (EVAL, ADAPTER, "dvc.lock", "params.yaml"):
        assert (clone / path).read_bytes() == (pushed.work / path).read_bytes(), path
    assert "up to date" in _run(["dvc", "status"], clone).stdout


def _adapter_object_key(clone: Path) -> str:
    """S3 key of the adapter's weights file, read from dvc.lock and the directory's manifest."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/tuned"]
    dir_md5 = out["md5"]
    manifest = clone / ".dvc/cache/files/md5" / dir_md5[:2] / dir_md5[2:]
    (entry,) = [e for e in json.loads(manifest.read_text()) if e["relpath"] == "model.safetensors"]
    return f"files/md5/{entry['md5'][:2]}/{entry['md5'][2:]}"


@pytest.mark.slow
def test_tampered_object_on_the_remote_is_refused(pushed):
    clone = _clone(pushed, "clone-tampered")
    _pull_experiment(pushed, clone)
    s3 = _s3_client(pushed.endpoint)
    key = _adapter_object_key(clone)
    good = s3.get_object(Bucket="dvc", Key=key)["Body"].read()
    assert good == (pushed.work / ADAPTER).read_bytes()
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])  # one flipped byte, same size
    s3.put_object(Bucket="dvc", Key=key, Body=bad)
    try:
        shutil.rmtree(clone / ".dvc/cache")
        (clone / ADAPTER).unlink()
        proc = _run(["dvc", "pull", "-v"], clone, check=False)
        assert proc.returncode != 0, proc.stdout + proc.stderr
        # `verify true`: the download is hashed, found corrupt and dropped (said only by -v);
        # the user sees "Checkout failed for following targets: models/tuned".
        assert "corrupted cache file" in proc.stdout  # DVC logs DEBUG to stdout
        assert "Checkout failed" in proc.stderr
        assert not (clone / ADAPTER).exists() or (clone / ADAPTER).read_bytes() != bad
        cached = [p for p in (clone / ".dvc/cache").rglob("*") if p.is_file()]
        assert not [p for p in cached if p.read_bytes() == bad]
    finally:
        s3.put_object(Bucket="dvc", Key=key, Body=good)


def _history_with_token(repo: Path) -> list[str]:
    """Files or commit messages holding the token, on any ref (branches and refs/exps)."""
    revs = subprocess.run(
        ["git", "rev-list", "--all"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    assert revs
    grep = subprocess.run(
        ["git", "grep", "-F", "-l", "-a", TOKEN, *revs], cwd=repo, capture_output=True, text=True
    )
    assert grep.returncode in (0, 1), grep.stderr
    log = subprocess.run(
        ["git", "log", "--all", "--format=%B"], cwd=repo, capture_output=True, text=True
    ).stdout
    return grep.stdout.split() + (["a commit message"] if TOKEN in log else [])


@pytest.mark.slow
def test_token_only_in_config_local(pushed):
    # What every command printed, and each clone's workspace, are checked where they are made
    # (`_run`, `_pull_experiment`): this test checks the same whether it runs alone or not.
    work = pushed.work
    assert (work / ".dvc/config.local").read_text().count(TOKEN) == 2
    assert stat.S_IMODE((work / ".dvc/config.local").stat().st_mode) == 0o600
    for path in (".dvc/config", "dvc.lock", "params.yaml", EVAL, ".git/config"):
        assert TOKEN not in (work / path).read_text(), path
    for path in (work / "metrics").rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path
    assert _workspace_files_with_token(work) == []
    assert _history_with_token(work) == []
    assert _history_with_token(pushed.bare) == []  # main and refs/exps as pushed
