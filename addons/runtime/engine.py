"""The lean engine: the phigate chain in a mitmproxy master that loads only the built-ins it needs.

    python -m addons.runtime.engine --mode reverse:http://127.0.0.1:8000@127.0.0.1:8443 --certs '*=certs/server.pem' \
        --set phigate_rules=rules/ --set phigate_profile=chroma ...

Why: stock mitmdump (DumpMaster) loads ~36 built-in addons, and mitmproxy calls every hook of every
flow on every addon in the chain, twice (the hook, then an `update` event), through a generator and a
context manager per addon. For a reverse proxy most of those addons never act (client replay, map
local, sticky cookies, flow export, the console's command history, ...) but each costs a dispatch.
This master is still mitmproxy underneath (the same proxy server, layers, TLS, hooks and option
manager); it loads the built-ins in `NEEDED` (in stock order, the chain in the script loader's
slot), and dispatches hooks through a table built once at load instead of probing every addon.

Two deliberate differences from mitmdump, both stricter:
- an unknown `--set` name (or config.yaml key) stops the engine; mitmdump defers it forever and runs
  with the default, so a typo in a security option would go unnoticed.
- options of built-ins it does not load are unknown here too, with a message naming the built-in
  and why it is not loaded (stock `mitmdump -s addons/chain.py` still has them).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, Final

from mitmproxy import addonmanager, exceptions, flow, hooks, master, options, optmanager
from mitmproxy.addons import (
    block,
    core,
    default_addons,
    disable_h2c,
    errorcheck,
    next_layer,
    proxyserver,
    termlog,
    tlsconfig,
    update_alt_svc,
)

log = logging.getLogger("phigate.engine")

# Every built-in of stock mitmdump (mitmproxy.addons.default_addons() plus DumpMaster's own), by
# mitmproxy's addon name, classified. tests/unit/test_engine.py fails on a name in neither table,
# so a mitmproxy upgrade that adds a built-in gets a human decision, not a silent omission.
NEEDED: Final[dict[str, str]] = {
    "termlog": "the minimal log output: start-up errors and warnings on the console",
    "core": "validates core options at configure (client certs, upstream cert chain)",
    "block": "kept for identical behaviour: refuses clients from public addresses unless "
             "block_global=false (an operator decision, as with mitmdump)",
    "disableh2c": "strips h2c upgrade headers and kills HTTP/2 prior-knowledge prefaces in clear: without "
                  "it a 101 from the backend would turn the connection into an uninspected TCP tunnel "
                  "(request smuggling past identity and policy)",
    "proxyserver": "runs the listener and the connection handlers (the proxy itself)",
    "nextlayer": "decides the protocol layers (TLS, HTTP/1, HTTP/2) for each connection",
    "tlsconfig": "TLS on the listener (the certs option) and to the backend (upstream verification)",
    "updatealtsvc": "rewrites a backend's Alt-Svc header to the gateway's port: without it a client "
                    "could be told to reach the backend directly, bypassing the gateway",
    "errorcheck": "exits non-zero when start-up logged an error (port in use, bad cert, bad option)",
}
NOT_NEEDED: Final[dict[str, str]] = {
    "browser": "starts a local browser (interactive tool)",
    "stripdnshttpsrecords": "DNS mode only; the gateway has no DNS listener",
    "blocklist": "block_list host filters; policy rules decide what is refused",
    "anticache": "strips cache headers on request; off by default, not a gateway concern",
    "anticomp": "asks for uncompressed responses; off by default, masking decodes what it needs",
    "clientplayback": "replays saved flows (interactive/testing tool)",
    "commandhistory": "console UI command history",
    "comment": "flow comments (console UI)",
    "cut": "copies flow fields (console command)",
    "export": "exports flows as curl/httpie (console command); would print tokens",
    "onboarding": "serves the mitm.it certificate page; a gateway must not serve it",
    "proxyauth": "proxy authentication; identity verifies OIDC tokens instead",
    "scriptloader": "loads -s scripts; the lean engine loads the chain directly",
    "dnsresolver": "DNS mode only",
    "serverplayback": "answers from saved flows (testing tool)",
    "mapremote": "rewrites URLs after classification; forward exactly what was classified",
    "maplocal": "answers from local files; not a gateway concern",
    "modifybody": "rewrites bodies after classification; forward exactly what was classified",
    "modifyheaders": "rewrites headers after classification; forward exactly what was classified",
    "stickyauth": "replays one caller's Authorization on other requests: identity confusion",
    "stickycookie": "replays one caller's cookies on other requests: identity confusion",
    "save": "writes whole flows (tokens, PHI) to disk; the audit ledger records what is needed",
    "savehar": "writes whole flows as HAR (tokens, PHI); the audit ledger records what is needed",
    "upstreamauth": "adds a fixed upstream credential; Forward injects the backend credential",
    "dumper": "prints flows to the console; paths and bodies can carry identifiers and PHI",
    "keepserving": "keeps mitmdump alive after reading a flow file or replaying; not used",
    "readfilestdin": "reads flows from a file or stdin; not used",
}


def builtin_addons() -> list[object]:
    """The built-ins the gateway needs, in mitmdump's order (termlog is added by the master)."""
    return [
        core.Core(),
        block.Block(),
        disable_h2c.DisableH2C(),
        proxyserver.Proxyserver(),
        # the phigate chain goes here: where stock mitmdump has its script loader
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        update_alt_svc.UpdateAltSvc(),
    ]


def addon_name(addon: object) -> str:
    return str(getattr(addon, "name", type(addon).__name__.lower()))


def stock_builtin_names() -> list[str]:
    """Names of every built-in stock mitmdump loads (for the classification test)."""
    from mitmproxy.addons import dumper, keepserving, readfile

    extras: list[object] = [termlog.TermLog(), dumper.Dumper(), keepserving.KeepServing(),
                            readfile.ReadFileStdin(), errorcheck.ErrorCheck()]
    try:
        return [addon_name(a) for a in [*default_addons(), *extras]]
    finally:
        for a in extras:  # these install process-wide log handlers in their constructors
            uninstall = getattr(a, "uninstall", None) or getattr(a, "finish", None)
            if uninstall:
                uninstall()


class _OptionRecorder:
    """A stand-in loader that records which options a built-in would declare."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add_option(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.names.append(name)

    def add_command(self, *args: Any) -> None:
        pass


def unloaded_builtin_options() -> dict[str, str]:
    """option name -> the not-loaded built-in that declares it (for a helpful error message)."""
    from mitmproxy.addons import dumper, keepserving, readfile

    owners: dict[str, str] = {}
    for a in [*default_addons(), dumper.Dumper(), keepserving.KeepServing(), readfile.ReadFileStdin()]:
        name = addon_name(a)
        if name in NEEDED or not hasattr(a, "load"):
            continue
        rec = _OptionRecorder()
        try:
            a.load(rec)
        except Exception:  # noqa: BLE001, S112 - only for a better message; never fatal
            continue
        for opt in rec.names:
            owners[opt] = name
    return owners


# ---------------------------------------------------------------- hook dispatch

HookFunc = Callable[..., Any]


class DispatchTable(addonmanager.AddonManager):
    """mitmproxy's AddonManager with hook lookup done once per hook name, not per event and addon.

    Same semantics as the stock manager: addons run in chain order; an addon and its sub-addons
    share one error scope (an exception is logged as "Addon error" and the next top-level addon
    runs); AddonHalt stops the event; OptionsError propagates. The table is rebuilt whenever an
    addon is added or removed. It assumes an addon's hook methods and sub-addon list do not change
    after it is registered: true for the phigate chain; mitmproxy's script loader (which swaps
    sub-addons on reload) is not loaded by this engine.
    """

    def __init__(self, master_: master.Master) -> None:
        super().__init__(master_)  # type: ignore[no-untyped-call]
        self._table: dict[str, tuple[tuple[HookFunc, ...], ...]] = {}

    def _invalidate(self) -> None:
        self._table = {}

    def register(self, addon: Any) -> Any:
        self._invalidate()
        return super().register(addon)  # type: ignore[no-untyped-call]

    def add(self, *addons: Any) -> None:
        super().add(*addons)  # type: ignore[no-untyped-call]
        self._invalidate()

    def remove(self, addon: Any) -> None:
        super().remove(addon)  # type: ignore[no-untyped-call]
        self._invalidate()

    def clear(self) -> None:
        super().clear()  # type: ignore[no-untyped-call]
        self._invalidate()

    def _hooks(self, name: str) -> tuple[tuple[HookFunc, ...], ...]:
        found = self._table.get(name)
        if found is None:
            scopes: list[tuple[HookFunc, ...]] = []
            for top in self.chain:
                funcs = _hook_funcs(top, name)
                if funcs:
                    scopes.append(funcs)
            found = self._table[name] = tuple(scopes)
        return found

    async def trigger_event(self, event: hooks.Hook) -> None:
        args = event.args()
        for funcs in self._hooks(event.name):
            try:
                for func in funcs:
                    res = func(*args)
                    if res is not None and inspect.isawaitable(res):
                        await res
            except Exception as exc:  # noqa: BLE001 - mitmproxy's own contract, see _halts
                if _halts(exc):
                    return

    def trigger(self, event: hooks.Hook) -> None:
        args = event.args()
        for funcs in self._hooks(event.name):
            try:
                for func in funcs:
                    if inspect.iscoroutinefunction(func):
                        raise exceptions.AddonManagerError(
                            f"Async handler {event.name} ({func}) cannot be called from sync context")
                    func(*args)
            except Exception as exc:  # noqa: BLE001 - mitmproxy's own contract, see _halts
                if _halts(exc):
                    return

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        # mitmproxy follows every flow hook with an `update` event for UIs; skip building it when
        # nothing listens (nothing does in the gateway).
        if self._hooks("update"):
            message = event.args()[0]
            if isinstance(message, flow.Flow):
                await self.trigger_event(hooks.UpdateHook([message]))


def _hook_funcs(top: object, name: str) -> tuple[HookFunc, ...]:
    """As AddonManager._iter_hooks: the addon's and its sub-addons' handlers for one hook."""
    funcs: list[HookFunc] = []
    for a in addonmanager.traverse([top]):
        func = getattr(a, name, None)
        if not func or isinstance(func, types.ModuleType):
            # a module imported under a hook's name (`from mitmproxy import log`) is not a handler
            continue
        if not callable(func):
            raise exceptions.AddonManagerError(f"Addon handler {name} ({a}) not callable")
        funcs.append(func)
    return tuple(funcs)


def _halts(exc: Exception) -> bool:
    """As mitmproxy's `safecall`: AddonHalt stops the event (True), OptionsError propagates, any
    other exception is logged as "Addon error" and the event goes on with the next addon (False)."""
    if isinstance(exc, exceptions.AddonHalt):
        return True
    if isinstance(exc, exceptions.OptionsError):
        raise exc
    tb = addonmanager.cut_traceback(exc.__traceback__, "trigger_event")
    addonmanager.logger.error(f"Addon error: {exc}", exc_info=(type(exc), exc, tb))
    return False


# ---------------------------------------------------------------- message type checks

def skip_message_typechecks() -> None:
    """Drop mitmproxy's debug-only type assertion on every HTTP message it constructs.

    mitmproxy.http.MessageData defines `__post_init__` only `if __debug__`: a development check
    that every field of each Request/Response has its annotated type, run for every message
    (~14% of the engine's CPU per small request, measured with py-spy). `python -O` drops it
    along with every `assert` (which phigate's own code and mitmproxy's protocol state machines
    rely on); this drops only that one check. The messages are built by mitmproxy's parsers and
    by `http.Response.make` in phigate, never from unchecked types.
    """
    from mitmproxy import http

    def _no_check(self: object) -> None:
        return None

    http.MessageData.__post_init__ = _no_check  # type: ignore[method-assign]


class RootLogLevel:
    """Keep the root logger's level at the console's verbosity.

    mitmproxy sets the root logger to DEBUG and lets each handler filter, so every `log.debug`
    on the request path builds a LogRecord that nobody prints (~4% of CPU per small request).
    With the root at the verbosity termlog prints, a debug call returns at `isEnabledFor`. Output
    is unchanged: termlog prints from its verbosity up, errorcheck only looks at errors.
    """

    def configure(self, updated: set[str]) -> None:
        if "termlog_verbosity" in updated:
            self.apply()

    def running(self) -> None:
        # The option's first value is set before this addon is registered: apply it at start.
        self.apply()

    @staticmethod
    def apply() -> None:
        from mitmproxy import ctx

        level = logging.getLevelName(str(ctx.options.termlog_verbosity).upper())
        logging.getLogger().setLevel(level if isinstance(level, int) else logging.DEBUG)


def skip_task_name_env_lookup() -> None:
    """Name mitmproxy's tasks without reading the environment every time.

    mitmproxy.utils.asyncio_utils.set_task_debug_info runs for every task it spawns (one per hook
    of every flow) and reads os.environ["PYTEST_CURRENT_TEST"] each time, only to add the running
    test's name to the task name (~3% of CPU per small request). This keeps everything else it
    does: the creation time, the name, the client address.
    """
    import time

    from mitmproxy.utils import asyncio_utils

    def set_task_debug_info(task: asyncio.Task[Any], *, name: str, client: tuple[Any, ...] | None = None) -> None:
        task.created = time.time()  # type: ignore[attr-defined]
        task.set_name(name)
        if client:
            task.client = client  # type: ignore[attr-defined]

    asyncio_utils.set_task_debug_info = set_task_debug_info


# ---------------------------------------------------------------- the master

class LeanMaster(master.Master):
    """A mitmproxy master with only the `NEEDED` built-ins, the phigate chain, and a dispatch table."""

    def __init__(self, opts: options.Options, chain: Sequence[object] | None = None,
                 dispatch_table: bool = True, with_termlog: bool = True) -> None:
        super().__init__(opts, with_termlog=False)
        if dispatch_table:
            self.options.changed.disconnect(self.addons._configure_all)
            self.addons = DispatchTable(self)
        if with_termlog:
            self._termlog_addon = termlog.TermLog(out=sys.stderr)
            self.addons.add(self._termlog_addon, RootLogLevel())
        builtins = builtin_addons()
        slot = next(i for i, a in enumerate(builtins) if isinstance(a, proxyserver.Proxyserver)) + 1
        self.addons.add(*builtins[:slot])
        self.addons.add(*(phigate_chain() if chain is None else chain))
        self.addons.add(*builtins[slot:])
        self.addons.add(errorcheck.ErrorCheck())

    def builtin_names(self) -> list[str]:
        """The built-ins loaded (mitmproxy addon names), in chain order."""
        return [addon_name(a) for a in self.addons.chain if type(a).__module__.startswith("mitmproxy.")]


def phigate_chain() -> list[object]:
    # The module-level list, not a second build(): it is exactly what `mitmdump -s addons/chain.py`
    # loads, and addons that register process-wide state in their constructor are built once.
    from addons import chain

    return list(chain.addons)


# ---------------------------------------------------------------- command line

def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m addons.runtime.engine",
        description="Run the phigate chain in the lean mitmproxy engine (a subset of mitmdump's flags).",
    )
    p.add_argument("--mode", "-m", action="append", default=[], help="proxy mode, as for mitmdump")
    p.add_argument("--certs", action="append", default=[], help="SPEC=PEM listener certificates")
    p.add_argument("--listen-host", help="listen address")
    p.add_argument("--listen-port", "-p", type=int, help="listen port")
    p.add_argument("--set", dest="setoptions", action="append", default=[], metavar="OPTION=VALUE",
                   help="set any loaded option; unknown names are an error")
    p.add_argument("--plain-dispatch", action="store_true",
                   help="use mitmproxy's stock hook dispatch (for benchmarks)")
    p.add_argument("--message-typechecks", action="store_true",
                   help="keep mitmproxy's debug-only type check of every HTTP message (for benchmarks)")
    p.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    p.add_argument("--options", action="store_true", help="print the names of all loaded options and exit")
    return p.parse_args(list(argv))


def configure(opts: options.Options, args: argparse.Namespace) -> None:
    """Apply config.yaml, the flags and --set like mitmdump does, but reject unknown names."""
    updates: dict[str, Any] = {}
    if args.mode:
        updates["mode"] = args.mode
    if args.certs:
        updates["certs"] = args.certs
    if args.listen_host is not None:
        updates["listen_host"] = args.listen_host
    if args.listen_port is not None:
        updates["listen_port"] = args.listen_port
    if args.quiet:
        updates["termlog_verbosity"] = "error"
    try:
        # mitmdump's order: --set first (it may move confdir), then confdir's config.yaml.
        opts.set(*args.setoptions, defer=True)
        optmanager.load_paths(opts, os.path.join(opts.confdir, "config.yaml"),
                              os.path.join(opts.confdir, "config.yml"))
    finally:
        unknown = dict(opts.deferred)
        opts.deferred.clear()
    if unknown:
        raise exceptions.OptionsError(unknown_options_message(sorted(unknown)))
    opts.update(**updates)


def unknown_options_message(names: Sequence[str]) -> str:
    owners = unloaded_builtin_options()
    lines = []
    for n in names:
        if n in owners:
            lines.append(f"{n}: an option of mitmproxy's {owners[n]!r} addon, which the lean engine does not "
                         f"load ({NOT_NEEDED.get(owners[n], 'not needed')}); drop it, or run --engine mitmdump")
        else:
            lines.append(f"{n}: no loaded addon declares it (misspelt? `--set` names are exact)")
    return "unknown option(s):\n  - " + "\n  - ".join(lines)


def main(argv: Sequence[str] | None = None, chain: Sequence[object] | None = None) -> int:
    """Run the engine; `chain` replaces the phigate chain (benchmarks and tests only)."""
    args = parse(sys.argv[1:] if argv is None else argv)
    return asyncio.run(_run(args, chain))


async def _run(args: argparse.Namespace, chain: Sequence[object] | None) -> int:
    # As mitmproxy.tools.main.run: the root logger passes everything, termlog filters by verbosity.
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ("tornado", "asyncio", "hpack", "quic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not args.message_typechecks:
        skip_message_typechecks()
    skip_task_name_env_lookup()
    opts = options.Options()
    m = LeanMaster(opts, chain=chain, dispatch_table=not args.plain_dispatch)
    if args.options:
        print("\n".join(sorted(opts.keys())))
        return 0
    try:
        configure(opts, args)
    except exceptions.OptionsError as exc:
        print(f"[phigate] engine: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, m.shutdown)
    # As mitmdump: a client that disconnects mid-write must not kill the process.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    await m.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
