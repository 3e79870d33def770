"""`./run.sh gateway`: check the configuration, then run the addon chain in reverse-proxy mode.

Everything a deployment must set is checked here, before mitmproxy starts, with a message that says
what to set: mitmproxy itself silently ignores a misspelt `--set` name, so a gateway started with a
typo would otherwise run with a default. The addons check again at start (for stock `mitmdump -s`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from addons.runtime.commands import FILE_FLAGS, ROOT, engine_argv, engine_env
from addons.runtime.workers import supervise


class LaunchError(Exception):
    pass


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run.sh gateway",
        description="Run the phigate gateway in front of a vector database (mitmproxy reverse mode).",
    )
    p.add_argument("--upstream", default=env("PHIGATE_UPSTREAM"),
                   help="backend base URL, e.g. http://127.0.0.1:8000 (env PHIGATE_UPSTREAM)")
    p.add_argument("--profile", default=env("PHIGATE_PROFILE", "chroma"),
                   help="backend profile: rules/profiles/NAME.yaml (env PHIGATE_PROFILE, default chroma)")
    p.add_argument("--rules", default=env("PHIGATE_RULES", str(ROOT / "rules")),
                   help="rules folder (env PHIGATE_RULES, default rules/)")
    p.add_argument("--host", default=env("PHIGATE_HOST", "127.0.0.1"),
                   help="listen address (env PHIGATE_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(env("PHIGATE_PORT", "8443")),
                   help="listen port (env PHIGATE_PORT, default 8443)")
    p.add_argument("--cert", default=env("PHIGATE_TLS_CERT", str(ROOT / "certs" / "server.pem")),
                   help="PEM with the listener's key and chain (env PHIGATE_TLS_CERT, default "
                        "certs/server.pem from ./run.sh certs)")
    p.add_argument("--plain-http", action="store_true", default=env("PHIGATE_PLAIN_HTTP") == "1",
                   help="accept plain HTTP instead of TLS (env PHIGATE_PLAIN_HTTP=1); for loopback tests only")
    p.add_argument("--issuer", default=env("PHIGATE_ISSUER"), help="OIDC issuer URL (env PHIGATE_ISSUER)")
    p.add_argument("--audience", default=env("PHIGATE_AUDIENCE", "phigate"),
                   help="expected token audience (env PHIGATE_AUDIENCE, default phigate)")
    p.add_argument("--backend-credential-env", default=env("PHIGATE_BACKEND_CREDENTIAL_ENV"),
                   help="env var holding the backend's own credential (env PHIGATE_BACKEND_CREDENTIAL_ENV)")
    p.add_argument("--backend-credential-file", default=env("PHIGATE_BACKEND_CREDENTIAL_FILE"),
                   help="file holding the backend's own credential (env PHIGATE_BACKEND_CREDENTIAL_FILE)")
    p.add_argument("--no-backend-credential", action="store_true",
                   help="the backend takes no credential (say so explicitly)")
    # Secrets and the audit trail: files (or env vars) outside the repository, made for development by
    # `./run.sh keys`. Each flag is a shorthand for the `--set` option named in its help.
    for flag, option, help_ in FILE_FLAGS:
        p.add_argument(flag, default=env("PHIGATE_" + option.removeprefix("phigate_").upper()),
                       help=f"{help_} (--set {option}; env PHIGATE_{option.removeprefix('phigate_').upper()})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="OPTION=VALUE",
                   help="any other mitmproxy/phigate option, as for mitmdump --set (repeatable)")
    p.add_argument("--engine", choices=("lean", "mitmdump"), default=env("PHIGATE_ENGINE", "lean"),
                   help="lean: the chain in a mitmproxy master with only the built-ins a gateway needs "
                        "(addons/runtime/engine.py; unknown --set names are an error); mitmdump: stock mitmdump -s "
                        "addons/chain.py (env PHIGATE_ENGINE, default lean)")
    p.add_argument("--workers", type=int, default=int(env("PHIGATE_WORKERS", "1")),
                   help="gateway processes behind HAProxy on the one listen address (env PHIGATE_WORKERS, "
                        "default 1: a single process, no HAProxy)")
    return p.parse_args(list(argv))


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
    if getattr(args, "workers", 1) < 1:
        problems.append(f"--workers {args.workers}: expected 1 or more")
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
    for _, option, _ in FILE_FLAGS:
        value = getattr(args, option.removeprefix("phigate_"), "")
        if value:
            opts[option] = value
    if getattr(args, "engine", "mitmdump") == "mitmdump":
        # Quiet console: flow lines would print paths, which can carry identifiers. (The lean
        # engine has no flow dumper at all, so the option does not exist there.)
        opts["flow_detail"] = "0"
    for item in args.sets:
        k, v = item.split("=", 1)
        opts[k] = v
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        opts = phigate_options(args)
    except LaunchError as exc:
        print(f"[phigate] {exc}", file=sys.stderr)
        return 2
    scheme = "http" if args.plain_http else "https"
    print(f"[phigate] gateway on {scheme}://{args.host}:{args.port} -> {args.upstream} "
          f"(profile {args.profile}, rules {args.rules}, engine {args.engine}, workers {args.workers})",
          file=sys.stderr, flush=True)
    if args.workers > 1:
        return supervise(args, opts)
    argv_ = engine_argv(args, opts)
    os.execve(argv_[0], argv_, engine_env())  # noqa: S606 - replaces this process with the gateway


if __name__ == "__main__":
    raise SystemExit(main())
