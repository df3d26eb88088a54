"""The `embedtune` command: helpers around the pipeline (stages themselves run through dvc).

Usage: DAGSHUB_TOKEN=... embedtune remote dagshub OWNER/REPO
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from embedtune.errors import run_stage
from embedtune.tools import remote


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedtune", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    remote_parser = commands.add_parser("remote", help="configure where results are shared")
    hosts = remote_parser.add_subparsers(dest="host_kind", required=True, metavar="HOST")
    dagshub = hosts.add_parser(
        "dagshub",
        help="git and DVC remotes on DagsHub",
        description=(
            f"Set the git remote {remote.REMOTE!r} and the default DVC remote {remote.REMOTE!r} "
            f"(S3, verify true) to a DagsHub repository. The token comes from "
            f"${remote.TOKEN_ENV} (or a hidden prompt in a terminal) and is stored in "
            ".dvc/config.local only."
        ),
    )
    dagshub.add_argument("repo", metavar="OWNER/REPO", help="the DagsHub repository")
    dagshub.add_argument(
        "--host", default=remote.DEFAULT_HOST, help="DagsHub server (default: %(default)s)"
    )
    dagshub.add_argument("--git-url", help="git remote URL instead of HOST/OWNER/REPO.git")
    dagshub.add_argument("--endpoint-url", help="S3 endpoint instead of HOST/OWNER/REPO.s3")
    dagshub.set_defaults(func=_remote_dagshub)
    return parser


def _remote_dagshub(args: argparse.Namespace) -> None:
    from getpass import getpass

    # Refuse a bad name or URL before asking for a token.
    owner, repo = remote.parse_repo(args.repo)
    remote.dagshub_urls(owner, repo, args.host, args.git_url, args.endpoint_url)
    token = remote.resolve_token(os.environ, sys.stdin.isatty(), getpass)
    print(
        remote.setup_dagshub(
            args.repo, token, Path.cwd(), args.host, args.git_url, args.endpoint_url
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_stage(f"{args.command} {args.host_kind}", lambda: args.func(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
