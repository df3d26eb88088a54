"""The `embedtune` command: helpers around the pipeline (stages themselves run through dvc).

Usage: DAGSHUB_TOKEN=... embedtune remote dagshub OWNER/REPO
       embedtune search "how do generators work" --k 5
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from embedtune.stage import run_stage
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
    dagshub.set_defaults(func=_remote_dagshub, name="remote dagshub")
    add_search(commands)
    return parser


def add_search(commands) -> None:
    search = commands.add_parser(
        "search",
        help="top chunks of the shipped retriever and the base model for a query",
        description=(
            "Rank one split's chunks for QUERY with the retriever `select` shipped "
            "(models/retriever/retriever.json) and with the dense base model, from the "
            "pipeline's stored files; prints both side by side."
        ),
    )
    search.add_argument("query", metavar="QUERY", help="what to search for")
    search.add_argument("--k", type=int, default=5, help="chunks per retriever (default: 5)")
    search.add_argument(
        "--split", default="validation", help="train or validation (default: %(default)s)"
    )
    search.add_argument(
        "--json",
        action="store_true",
        help="print JSON for scripts: a list of rows, one per chunk and column",
    )
    search.set_defaults(func=_search, name="search")


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


def _search(args: argparse.Namespace) -> None:
    from embedtune.tools import search

    results = search.search(args.query, args.split, args.k)
    if args.json:
        print(search.as_json(results))
    else:
        search.print_table(results)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_stage(args.name, lambda: args.func(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
