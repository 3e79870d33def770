"""`./run.sh gateway`: check the configuration, then run the addon chain in reverse-proxy mode.

Everything a deployment must set is checked here, before mitmproxy starts, with a message that says
what to set: mitmproxy itself silently ignores a misspelt `--set` name, so a gateway started with a
typo would otherwise run with a default. The addons check again at start (for stock `mitmdump -s`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from addons.config import settings
from addons.config.rulefiles import ConfigError
from addons.runtime.commands import FILE_FLAGS, add_option_settings, engine_argv, engine_env
from addons.runtime.workers import supervise


class LaunchError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.sh gateway",
        description="Run the phigate gateway in front of a vector database (mitmproxy reverse mode). Every "
                    "setting can also come from its environment variable or from --config FILE; a flag wins "
                    "over its environment variable, which wins over the file.",
    )
    p.add_argument("--config", default=os.environ.get("PHIGATE_CONFIG"), metavar="FILE",
                   help="YAML file with any of the settings below by name (upstream: ..., port: ...), and "
                        "other options under set: (env PHIGATE_CONFIG)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings (secrets elided) and where each came from, then exit")
    p.add_argument("--version", action="store_true", help="print the versions of phigate, mitmproxy and Python")
    for s in settings.SETTINGS:
        default = f"default {s.default}" if s.default not in ("", None) and s.key != "rules" else ""
        extra = "; ".join(x for x in (f"env {s.env}", default, f"--set {s.option}" if s.option else "") if x)
        if s.kind is bool:
            p.add_argument(s.flag, dest=s.key, action="store_const", const=True, default=None,
                           help=f"{s.help} ({extra})")
        else:
            p.add_argument(s.flag, dest=s.key, type=s.kind, default=None, choices=s.choices or None,
                           help=f"{s.help} ({extra})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="OPTION=VALUE",
                   help="any other mitmproxy/phigate option, as for mitmdump --set (repeatable; wins over "
                        "the config file's set:)")
    return p


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    """Flags, then environment, then --config file, then defaults; LaunchError on a bad file or value."""
    given = parser().parse_args(list(argv))
    file_values: dict[str, Any] = {}
    file_sets: dict[str, str] = {}
    try:
        if given.config:
            file_values, file_sets = settings.load_file(given.config)
        values, sources = settings.resolve(vars(given), file_values, environ)
    except ConfigError as exc:
        raise LaunchError(f"cannot start the gateway: {exc.diagnostics()}") from exc
    args = argparse.Namespace(**{**vars(given), **values})
    args.sources = sources
    # The file's options first: a --set for the same option comes later and wins.
    args.sets = [f"{k}={v}" for k, v in file_sets.items()] + list(given.sets)
    return args


def phigate_options(args: argparse.Namespace) -> dict[str, str]:
    """Validate the arguments and turn them into `--set` options; raise LaunchError with what to set."""
    problems: list[str] = []
    if not args.upstream:
        problems.append("--upstream (or PHIGATE_UPSTREAM): the backend URL, e.g. http://127.0.0.1:8000")
    if not args.issuer:
        problems.append("--issuer (or PHIGATE_ISSUER): your OpenID provider's issuer URL")
    rules = Path(args.rules)
    if not (rules / "policy.yaml").is_file():
        problems.append(f"--rules: {rules} has no policy.yaml; point it at the rules folder")
    elif not (rules / "profiles" / f"{args.profile}.yaml").is_file():
        known = sorted(p.stem for p in (rules / "profiles").glob("*.yaml"))
        problems.append(f"--profile: no {rules}/profiles/{args.profile}.yaml (known: {', '.join(known)})")
    if not args.no_backend_credential:
        if args.backend_credential_env and not os.environ.get(args.backend_credential_env):
            problems.append(f"the backend credential env var {args.backend_credential_env} is empty or unset")
        elif args.backend_credential_file and not Path(args.backend_credential_file).is_file():
            problems.append(f"the backend credential file {args.backend_credential_file} does not exist")
        elif not args.backend_credential_env and not args.backend_credential_file:
            problems.append("--backend-credential-env or --backend-credential-file: the backend's own "
                            "credential (or --no-backend-credential for a backend without one)")
    if not args.plain_http and not Path(args.cert).is_file():
        problems.append(f"--cert: {args.cert} does not exist; run ./run.sh certs, or pass --plain-http "
                        "for a loopback test")
    for flag, option, _ in FILE_FLAGS:
        value = getattr(args, option.removeprefix("phigate_"), "")
        if value and flag.endswith("-file") and not Path(value).is_file():
            problems.append(f"{flag}: {value} does not exist (./run.sh keys makes development keys)")
    for item in args.sets:
        if "=" not in item:
            problems.append(f"--set {item!r}: expected OPTION=VALUE")
    if problems:
        raise LaunchError("cannot start the gateway:\n  - " + "\n  - ".join(problems))
    opts = {
        "phigate_rules": str(rules),
        "phigate_profile": args.profile,
        "phigate_issuer": args.issuer,
        "phigate_audience": args.audience,
        "phigate_backend_credential_env": args.backend_credential_env or "",
        "phigate_backend_credential_file": args.backend_credential_file or "",
        "phigate_backend_credential_none": "true" if args.no_backend_credential else "false",
        "phigate_allow_plain_http": "true" if args.plain_http else "false",
    }
    add_option_settings(args, opts)
    if getattr(args, "engine", "mitmdump") == "mitmdump":
        # Quiet console: flow lines would print paths, which can carry identifiers. (The lean
        # engine has no flow dumper at all, so the option does not exist there.)
        opts["flow_detail"] = "0"
    for item in args.sets:
        k, v = item.split("=", 1)
        opts[k] = v
    return opts


def version() -> str:
    from importlib import metadata

    import mitmproxy.version

    try:
        own = metadata.version("phigate")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        own = "unknown"
    return f"phigate {own} (mitmproxy {mitmproxy.version.VERSION}, Python {sys.version.split()[0]})"


def print_config(args: argparse.Namespace) -> str:
    """The effective settings as a config file would hold them, each with where it came from."""
    lines = [f"# effective settings of {version()}; secrets elided"]
    if args.config:
        lines.append(f"# config file: {Path(args.config).resolve()}")
    for s in settings.SETTINGS:
        value = getattr(args, s.key)
        shown = settings.elide(s.key, str(value)) if isinstance(value, str) else value
        text = ("true" if shown else "false") if isinstance(shown, bool) else json.dumps(shown)
        lines.append(f"{s.key}: {text}  # {args.sources.get(s.key, 'default')}")
    sets = dict(item.split("=", 1) for item in args.sets if "=" in item)
    if sets:
        lines.append(f"{settings.SET_KEY}:")
        lines += [f"  {k}: {json.dumps(settings.elide(k, v))}" for k, v in sets.items()]
    try:
        phigate_options(args)
    except LaunchError as exc:
        lines += ["# the gateway would not start with these settings:",
                  *("#" + x for x in str(exc).splitlines()[1:])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        if args.version:
            print(version())
            return 0
        if args.print_config:
            print(print_config(args))
            return 0
        opts = phigate_options(args)
    except LaunchError as exc:
        print(f"[phigate] {exc}", file=sys.stderr)
        return 2
    scheme = "http" if args.plain_http else "https"
    say(args, f"gateway on {scheme}://{args.host}:{args.port} -> {args.upstream} (profile {args.profile}, "
              f"rules {args.rules}, engine {args.engine}, workers {args.workers})")
    if args.workers > 1:
        return supervise(args, opts)
    argv_ = engine_argv(args, opts)
    os.execve(argv_[0], argv_, engine_env())  # noqa: S606 - replaces this process with the gateway


def say(args: argparse.Namespace, message: str) -> None:
    """A launcher line on stderr, in the format the gateway's own lines use."""
    if args.log_format == "json":
        from addons.core.logs import json_line

        print(json_line("phigate.launch", message), file=sys.stderr, flush=True)
    else:
        print(f"[phigate] {message}", file=sys.stderr, flush=True)




if __name__ == "__main__":
    raise SystemExit(main())
