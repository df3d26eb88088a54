"""Point this checkout at a DagsHub repository: git remote, DVC S3 remote and token.

Usage: DAGSHUB_TOKEN=... embedtune remote dagshub OWNER/REPO

The git remote `origin` and the DVC remote `origin` (S3, `verify true`) go to
https://dagshub.com/OWNER/REPO. The token is written to `.dvc/config.local` only (git-ignored,
mode 600), never to a tracked file, and never printed.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from embedtune.errors import EmbedtuneError

DEFAULT_HOST = "https://dagshub.com"
TOKEN_ENV = "DAGSHUB_TOKEN"
REMOTE = "origin"
BUCKET_URL = "s3://dvc"  # DagsHub serves each repository's DVC storage as the bucket `dvc`

# DagsHub (like GitHub) allows letters, digits, '-', '_' and '.' in user and repository names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


@dataclass(frozen=True)
class RemoteUrls:
    """Where git pushes commits and where DVC pushes cached files."""

    git: str
    endpoint: str  # S3 endpoint; the bucket is BUCKET_URL


def parse_repo(spec: str) -> tuple[str, str]:
    """Split `OWNER/REPO` into its two names, refusing anything else.

    Returns:
        (owner, repo).
    """
    parts = spec.split("/")
    if len(parts) != 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise EmbedtuneError(
            f"expected OWNER/REPO (letters, digits, '.', '_' or '-'), got {spec!r}"
        )
    owner, repo = parts
    if repo.endswith(".git"):
        raise EmbedtuneError(f"give the repository without '.git': {owner}/{repo[:-4]}")
    return owner, repo


def check_url(name: str, url: str) -> str:
    """Return `url` without a trailing '/', or refuse one that is not http(s)://HOST[/PATH]."""
    if not _URL.fullmatch(url):
        raise EmbedtuneError(f"{name} must be an http:// or https:// URL, got {url!r}")
    return url.rstrip("/")


def dagshub_urls(
    owner: str,
    repo: str,
    host: str = DEFAULT_HOST,
    git_url: str | None = None,
    endpoint_url: str | None = None,
) -> RemoteUrls:
    """The git URL and S3 endpoint of `owner/repo` on `host`; either may be overridden.

    Returns:
        RemoteUrls(git=HOST/OWNER/REPO.git, endpoint=HOST/OWNER/REPO.s3) unless overridden.
    """
    base = f"{check_url('--host', host)}/{owner}/{repo}"
    if git_url is not None and not git_url.strip():
        raise EmbedtuneError("--git-url must not be empty")
    if git_url is not None and git_url.startswith("-"):
        # git would read it as one of its options (`--mirror=push`, `--upload-pack=...`).
        raise EmbedtuneError(
            f"--git-url must be a URL or a path, not an option: got {git_url!r} "
            "(write a path starting with '-' as ./-name)"
        )
    return RemoteUrls(
        git=git_url or f"{base}.git",
        endpoint=check_url("--endpoint-url", endpoint_url) if endpoint_url else f"{base}.s3",
    )


def resolve_token(
    environ: Mapping[str, str], interactive: bool, prompt: Callable[[str], str]
) -> str:
    """The DagsHub token: `$DAGSHUB_TOKEN`, else asked through `prompt` when `interactive`.

    Messages never contain the token itself.
    """
    token = environ.get(TOKEN_ENV, "").strip()
    source = TOKEN_ENV
    if not token:
        if not interactive:
            raise EmbedtuneError(
                f"no DagsHub token: set {TOKEN_ENV} (DagsHub > Settings > Tokens), "
                "or run in a terminal to be asked for it"
            )
        token = prompt("DagsHub token (input hidden): ").strip()
        source = "the token entered"
        if not token:
            raise EmbedtuneError(f"no DagsHub token entered; or set {TOKEN_ENV}")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise EmbedtuneError(f"{source} contains spaces or control characters")
    return token


def dvc_sections(endpoint: str, token: str) -> tuple[dict, dict]:
    """DVC config for the S3 remote: (for `.dvc/config`, for `.dvc/config.local`).

    The local section repeats url, endpoint and `verify` next to the token, so it stays valid
    at a commit whose `.dvc/config` has no such remote (a stale local section with no `url`
    breaks every dvc command).
    """
    shared = {"url": BUCKET_URL, "endpointurl": endpoint, "verify": "true"}
    local = {**shared, "access_key_id": token, "secret_access_key": token}
    return shared, local


def next_steps(branch: str, commit_config: bool) -> str:
    """What to run after the remotes are set, as lines to print."""
    lines = ["Next:"]
    if commit_config:
        lines.append('  git add .dvc/config && git commit -m "DVC remote on DagsHub"')
    lines += [
        f"  git push -u {REMOTE} {branch}",
        "  dvc push                    # cached outputs of the workspace",
        f"  dvc exp push {REMOTE} <exp>   # an experiment (`dvc exp show`): git ref and outputs",
        "git asks for your DagsHub user name and the token as password (a credential helper "
        "keeps it).",
    ]
    return "\n".join(lines)


# --- side effects: git, DVC config files --------------------------------------------------


def _git(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise EmbedtuneError("git not found on PATH") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise EmbedtuneError(f"git {' '.join(args)} failed: {detail}")
    return proc


def find_repo(cwd: Path) -> tuple[Path, Path]:
    """(git top level, .dvc directory) of the checkout that holds `cwd`."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        dvc_dir = Path(Repo.find_dvc_dir(os.fspath(cwd)))
    except NotDvcRepoError:
        raise EmbedtuneError(f"{cwd} is not inside a DVC repository (no .dvc/)") from None
    top = _git(["rev-parse", "--show-toplevel"], dvc_dir.parent, check=False)
    if top.returncode != 0:
        raise EmbedtuneError(f"{dvc_dir.parent} is not a git repository")
    return Path(top.stdout.strip()), dvc_dir


def set_git_remote(top: Path, url: str) -> str | None:
    """Add or re-point the git remote `origin`; return its previous URL, if any."""
    # `--`: nothing after it is read as an option, whatever the URL holds.
    old = _git(["remote", "get-url", "--", REMOTE], top, check=False)
    if old.returncode == 0:
        _git(["remote", "set-url", "--", REMOTE, url], top)
        return old.stdout.strip()
    _git(["remote", "add", "--", REMOTE, url], top)
    return None


def check_local_config_ignored(top: Path, dvc_dir: Path) -> Path:
    """`.dvc/config.local`, once sure that git ignores it (a tracked one would leak the token)."""
    path = dvc_dir / "config.local"
    rel = os.path.relpath(path, top)
    if _git(["check-ignore", "-q", "--", rel], top, check=False).returncode != 0:
        raise EmbedtuneError(
            f"{rel} is tracked or not ignored by git; it would carry the token: "
            "add '/config.local' to .dvc/.gitignore (and `git rm --cached` it)"
        )
    return path


def write_dvc_remote(dvc_dir: Path, shared: dict, local: dict) -> None:
    """Write the remote (as `dvc remote add -d -f` would) to .dvc/config, then .dvc/config.local."""
    from dvc.config import Config, ConfigError

    local_path = dvc_dir / Config.CONFIG_LOCAL
    # Private before the token goes in; DVC rewrites the file in place, keeping the mode.
    os.close(os.open(local_path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(local_path, stat.S_IRUSR | stat.S_IWUSR)
    try:
        # Not validated on load: a stale local section is what the local edit below repairs.
        config = Config(os.fspath(dvc_dir), validate=False)
        for level, section in (("repo", shared), ("local", local)):
            with config.edit(level) as conf:
                conf["remote"][REMOTE] = dict(section)
                conf["core"]["remote"] = REMOTE
    except ConfigError as err:
        # DVC's messages name keys, never values: no token in them.
        raise EmbedtuneError(f"DVC config: {err}") from None


def has_dvc_s3() -> bool:
    import importlib.util

    return importlib.util.find_spec("dvc_s3") is not None


def setup_dagshub(
    spec: str,
    token: str,
    cwd: Path,
    host: str = DEFAULT_HOST,
    git_url: str | None = None,
    endpoint_url: str | None = None,
) -> str:
    """Configure git and DVC remotes in the checkout holding `cwd`; return the report to print."""
    owner, repo = parse_repo(spec)
    urls = dagshub_urls(owner, repo, host, git_url, endpoint_url)
    if not has_dvc_s3():
        raise EmbedtuneError("DVC's S3 remote needs the package dvc-s3: pip install dvc-s3")
    top, dvc_dir = find_repo(cwd)
    local_path = check_local_config_ignored(top, dvc_dir)

    old_git = set_git_remote(top, urls.git)
    shared, local = dvc_sections(urls.endpoint, token)
    write_dvc_remote(dvc_dir, shared, local)

    branch = _git(["symbolic-ref", "--short", "-q", "HEAD"], top, check=False).stdout.strip()
    config_rel = os.path.relpath(dvc_dir / "config", top)
    changed = _git(["status", "--porcelain", "--", config_rel], top).stdout.strip()
    was = f" (was {old_git})" if old_git and old_git != urls.git else ""
    return "\n".join(
        [
            f"git remote {REMOTE}: {urls.git}{was}",
            f"DVC remote {REMOTE} (default): {BUCKET_URL} at {urls.endpoint}, verify true",
            f"token: {os.path.relpath(local_path, top)} only (git-ignored)",
            next_steps(branch or "main", commit_config=bool(changed)),
        ]
    )
