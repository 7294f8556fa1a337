"""The `backfill fetch jenkins|gitlab|github` commands: arguments -> one library call -> summary and exit status."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from backfill.errors import ExitStatus
from backfill.fetch import github, gitlab, jenkins
from backfill.fetch.core import FetchResult, Http, HttpSettings, Progress


def _number(kind: type, *, low: float, low_ok: bool) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` at least `low` (or above it when not `low_ok`)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (value == low and not low_ok):
            raise argparse.ArgumentTypeError(f"must be {low:g} or more" if low_ok else f"must be more than {low:g}")
        return value

    return parse


_positive = _number(int, low=1, low_ok=True)
_count = _number(int, low=0, low_ok=True)
_seconds = _number(float, low=0, low_ok=False)


def _common(parser: argparse.ArgumentParser, date_type: Callable[[str], Any], *, page_size: int, max_page: int) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the export file (written to a temporary name, moved into place when complete)")
    parser.add_argument("--since", type=date_type, metavar="DATE", help="only history newer than DATE (UTC), for incremental runs")
    parser.add_argument("--page-size", type=_positive, default=page_size, metavar="N",
                        help=f"items per request (default {page_size}, at most {max_page})")
    parser.add_argument("--token-file", metavar="FILE", help="read the token from FILE instead of the environment")
    parser.add_argument("--max-retries", type=_count, default=5, metavar="N",
                        help="failed attempts in a row (5xx, network) before stopping, resumable (default 5)")
    parser.add_argument("--timeout", type=_seconds, default=30.0, metavar="SECONDS", help="per request (default 30)")


def add_commands(commands: Any, date_type: Callable[[str], Any]) -> None:
    top = commands.add_parser(
        "fetch", help="pull a complete deploy history from Jenkins, GitLab or GitHub into an export file",
        description="Fetch every build or deployment into a file the matching reader reads (the raw API JSON). "
                    "Resumable: rerun the same command after an interruption. Completeness is checked and every gap reported.",
    )
    sources = top.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(top), required=True)

    jk = sources.add_parser("jenkins", help="builds of Jenkins jobs (allBuilds ranges)",
                            description="Fetch every build of the given jobs; folders expand to the jobs inside them. "
                                        f"Credentials: ${jenkins.USER_ENV} and ${jenkins.TOKEN_ENV} (or --token-file).")
    jk.add_argument("--url", required=True, metavar="URL", help="the Jenkins root URL")
    jk.add_argument("--job", dest="jobs", action="append", required=True, metavar="PATH",
                    help="job, folder or multibranch project, folders as a/b (repeatable)")
    jk.add_argument("--user", metavar="USER", help=f"the Jenkins user the token belongs to (default ${jenkins.USER_ENV})")
    _common(jk, date_type, page_size=100, max_page=1000)
    jk.set_defaults(handler=cmd_jenkins)

    gl = sources.add_parser("gitlab", help="deployments of GitLab projects",
                            description="Fetch every deployment of the given projects. "
                                        f"Token: ${gitlab.TOKEN_ENV} (or --token-file), scope read_api.")
    gl.add_argument("--url", required=True, metavar="URL", help="the GitLab URL (https://gitlab.com or your instance)")
    gl.add_argument("--project", dest="projects", action="append", required=True, metavar="ID|PATH",
                    help="project id or path such as acme/shop (repeatable)")
    gl.add_argument("--environment", metavar="NAME", help="only deployments to this environment")
    _common(gl, date_type, page_size=gitlab.MAX_PAGE, max_page=gitlab.MAX_PAGE)
    gl.set_defaults(handler=cmd_gitlab)

    gh = sources.add_parser("github", help="workflow runs or deployments of GitHub repositories",
                            description="Fetch every workflow run (REST, created-date windows of at most 1,000) or every "
                                        "deployment with its statuses (GraphQL). "
                                        f"Token: ${github.TOKEN_ENV} (or --token-file), read access to Actions / Deployments.")
    gh.add_argument("--api-url", default=github.API_URL, metavar="URL",
                    help=f"the REST API root (default {github.API_URL}; GitHub Enterprise Server: https://HOST/api/v3)")
    gh.add_argument("--repo", dest="repos", action="append", required=True, metavar="OWNER/NAME", help="repository (repeatable)")
    what = gh.add_mutually_exclusive_group(required=True)
    what.add_argument("--runs", dest="what", action="store_const", const="runs", help="workflow runs (GitHub Actions)")
    what.add_argument("--deployments", dest="what", action="store_const", const="deployments", help="deployments with their statuses")
    gh.add_argument("--workflow", metavar="FILE|ID", help="with --runs: only this workflow (deploy.yml, or its id)")
    gh.add_argument("--jobs", action="store_true",
                    help="with --runs: also fetch each run's jobs and embed them as `jobs` (one more request per run)")
    gh.add_argument("--environment", metavar="NAME", help="with --deployments: only this environment")
    _common(gh, date_type, page_size=github.MAX_PAGE, max_page=github.MAX_PAGE)
    gh.set_defaults(handler=cmd_github)


def _http(args: argparse.Namespace, url: str, secret_headers: dict[str, str], progress: Progress, *,
          option: str = "--url", headers: dict[str, str] | None = None) -> Http:
    settings = HttpSettings(max_retries=args.max_retries, timeout=args.timeout)
    return Http(url, secret_headers, option=option, headers=headers, settings=settings, progress=progress)


def _finish(result: FetchResult) -> int:
    print(result.summary())
    result.check()
    return ExitStatus.OK


def cmd_jenkins(args: argparse.Namespace) -> int:
    from backfill.client import check_base_url

    check_base_url(args.url, option="--url")
    secret = jenkins.read_credentials(args.token_file, args.user)
    options = jenkins.JenkinsOptions(args.url, tuple(args.jobs), page_size=args.page_size, since=args.since)
    progress = Progress("builds")
    return _finish(jenkins.fetch(options, args.output, _http(args, args.url, secret, progress), progress=progress))


def cmd_gitlab(args: argparse.Namespace) -> int:
    url = gitlab.api_root(args.url.rstrip("/"))
    secret = gitlab.read_credentials(args.token_file)
    options = gitlab.GitLabOptions(url, tuple(args.projects), environment=args.environment,
                                   page_size=args.page_size, since=args.since)
    progress = Progress("deployments")
    return _finish(gitlab.fetch(options, args.output, _http(args, url, secret, progress), progress=progress))


def cmd_github(args: argparse.Namespace) -> int:
    secret = github.read_credentials(args.token_file)
    options = github.GitHubOptions(args.api_url.rstrip("/"), tuple(args.repos), what=args.what, workflow=args.workflow,
                                   jobs=args.jobs, environment=args.environment, page_size=args.page_size, since=args.since)
    progress = Progress("runs" if args.what == "runs" else "deployments")
    http = _http(args, options.api_url, secret, progress, option="--api-url", headers=github.HEADERS)
    return _finish(github.fetch(options, args.output, http, progress=progress))
