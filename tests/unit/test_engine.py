"""The lean engine (addons/runtime/engine.py): which built-ins it loads, strict options, hook dispatch."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from mitmproxy import addonmanager, exceptions, hooks, options
from mitmproxy.test import taddons

from addons.runtime import engine
from tests.support.servers import ROOT

# The exact built-ins the lean master loads, in order (the chain sits after proxyserver, where
# stock mitmdump has its script loader). A change here is a decision: update NEEDED with a reason.
EXPECTED_BUILTINS = ["termlog", "core", "block", "disableh2c", "proxyserver", "nextlayer", "tlsconfig",
                     "updatealtsvc", "errorcheck"]


def test_every_stock_builtin_is_classified() -> None:
    # A mitmproxy upgrade that adds a built-in fails here until someone decides whether the gateway
    # needs it (NEEDED) or not (NOT_NEEDED), with a reason.
    stock = engine.stock_builtin_names()
    unclassified = [n for n in stock if n not in engine.NEEDED and n not in engine.NOT_NEEDED]
    assert unclassified == []
    assert not set(engine.NEEDED) & set(engine.NOT_NEEDED)
    # and nothing classified that mitmproxy no longer ships (stale entries hide real changes)
    assert sorted(set(engine.NEEDED) | set(engine.NOT_NEEDED)) == sorted(stock)
    assert all(reason.strip() for reason in [*engine.NEEDED.values(), *engine.NOT_NEEDED.values()])


async def test_lean_master_loads_exactly_the_needed_builtins() -> None:
    m = engine.LeanMaster(options.Options(), chain=[], with_termlog=True)
    try:
        assert m.builtin_names() == EXPECTED_BUILTINS
        assert sorted(EXPECTED_BUILTINS) == sorted(engine.NEEDED)
    finally:
        await m.done()


class _Probe:
    def __init__(self, name: str) -> None:
        self.name = name

    def request(self, flow: Any) -> None:
        pass


async def test_chain_sits_in_the_script_loader_slot() -> None:
    m = engine.LeanMaster(options.Options(), chain=[_Probe("phigate_a"), _Probe("phigate_b")])
    try:
        names = [engine.addon_name(a) for a in m.addons.chain]
        assert names.index("proxyserver") + 1 == names.index("phigate_a")
        assert names.index("phigate_b") + 1 == names.index("nextlayer")
    finally:
        await m.done()


def test_the_real_chain_loads_in_the_lean_engine_and_declares_its_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "addons.runtime.engine", "--options"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.split())
    assert {"phigate_rules", "phigate_profile", "phigate_node_id", "mode", "certs", "block_global"} <= names
    # options of built-ins the engine does not load are absent, so setting them fails
    assert not {"flow_detail", "block_list", "save_stream_file", "stickycookie", "scripts"} & names


# ---------------------------------------------------------------- strict options

@pytest.mark.parametrize(("spec", "expected"), [
    ("phigate_rulez=rules/", r"phigate_rulez: no loaded addon declares it \(misspelt\?"),
    ("flow_detail=0", r"flow_detail: an option of mitmproxy's 'dumper' addon, which the lean engine does not load"),
    ("save_stream_file=/tmp/flows", r"save_stream_file: an option of mitmproxy's 'save' addon"),
])
async def test_unknown_set_options_fail(spec: str, expected: str) -> None:
    opts = options.Options()
    m = engine.LeanMaster(opts, chain=[])
    try:
        with pytest.raises(exceptions.OptionsError, match=expected):
            engine.configure(opts, engine.parse(["--set", spec]))
    finally:
        await m.done()


async def test_known_options_and_flags_apply() -> None:
    opts = options.Options()
    m = engine.LeanMaster(opts, chain=[])
    try:
        engine.configure(opts, engine.parse(["--mode", "reverse:http://127.0.0.1:9@127.0.0.1:1", "--set",
                                             "block_global=false", "--set", "termlog_verbosity=warn"]))
        assert opts.mode == ["reverse:http://127.0.0.1:9@127.0.0.1:1"]
        assert opts.block_global is False
        assert logging.getLogger().level == logging.WARNING  # RootLogLevel follows the verbosity
        with pytest.raises(exceptions.OptionsError, match="boolean"):
            engine.configure(opts, engine.parse(["--set", "block_global=maybe"]))
    finally:
        await m.done()
        logging.getLogger().setLevel(logging.WARNING)


def test_a_misspelt_option_stops_the_engine_but_not_mitmdump(tmp_path: Any) -> None:
    # The improvement over mitmdump, end to end: same typo, mitmdump starts anyway.
    proc = subprocess.run([sys.executable, "-m", "addons.runtime.engine", "--set", f"confdir={tmp_path}",
                           "--set", "phigate_profle=chroma"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "phigate_profle: no loaded addon declares it" in proc.stderr
    mitmdump = ROOT / ".phigate" / "venv" / "bin" / "mitmdump"
    proc = subprocess.run([str(mitmdump), "--set", f"confdir={tmp_path}", "--set", "phigate_profle=chroma",
                           "--options"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0  # silently ignored: the reason the lean engine checks


def test_config_yaml_keys_are_checked_too(tmp_path: Any) -> None:
    (tmp_path / "config.yaml").write_text("phigate_ruels: rules/\n")
    proc = subprocess.run([sys.executable, "-m", "addons.runtime.engine", "--set", f"confdir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "phigate_ruels" in proc.stderr


# ---------------------------------------------------------------- hook dispatch, same semantics

class Recorder:
    def __init__(self, name: str, log: list[str], fail: bool = False, halt: bool = False,
                 sub: list[Any] | None = None) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.halt = halt
        if sub is not None:
            self.addons = sub

    def running(self) -> None:
        self.log.append(f"{self.name}.running")
        if self.fail:
            raise ValueError(f"{self.name} broke")
        if self.halt:
            raise exceptions.AddonHalt()


class AsyncRecorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def running(self) -> None:
        self.log.append(f"{self.name}.running(async)")


def scenario(log: list[str]) -> list[Any]:
    return [
        Recorder("a", log),
        Recorder("b", log, fail=True, sub=[Recorder("b_child", log)]),  # error ends b's scope, not the event
        Recorder("c", log, sub=[Recorder("c_child", log, fail=True), Recorder("c_child2", log)]),
        AsyncRecorder("d", log),
        Recorder("e", log, halt=True),
        Recorder("f", log),  # never reached: e halted the event
    ]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    caplog.clear()
    return found


async def run_scenario(manager_cls: type[addonmanager.AddonManager],
                       caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    log: list[str] = []
    with taddons.context() as tctx:
        mgr = manager_cls(tctx.master)
        for a in scenario(log):
            mgr.add(a)
        await mgr.trigger_event(hooks.RunningHook())
    return log, errors(caplog)


async def test_dispatch_table_matches_stock_dispatch(caplog: pytest.LogCaptureFixture) -> None:
    stock = await run_scenario(addonmanager.AddonManager, caplog)
    lean = await run_scenario(engine.DispatchTable, caplog)
    assert lean == stock
    assert lean[0] == ["a.running", "b.running", "c.running", "c_child.running", "d.running(async)", "e.running"]
    assert lean[1] == ["Addon error: b broke", "Addon error: c_child broke"]


async def test_dispatch_table_follows_added_and_removed_addons() -> None:
    log: list[str] = []
    with taddons.context() as tctx:
        mgr = engine.DispatchTable(tctx.master)
        first = Recorder("first", log)
        mgr.add(first)
        await mgr.trigger_event(hooks.RunningHook())
        mgr.add(Recorder("second", log))
        await mgr.trigger_event(hooks.RunningHook())
        mgr.remove(first)
        await mgr.trigger_event(hooks.RunningHook())
    assert log == ["first.running", "first.running", "second.running", "second.running"]


async def test_sync_trigger_refuses_async_handlers_like_stock(caplog: pytest.LogCaptureFixture) -> None:
    for cls in (addonmanager.AddonManager, engine.DispatchTable):
        log: list[str] = []
        with taddons.context() as tctx:
            mgr = cls(tctx.master)
            mgr.add(AsyncRecorder("d", log), Recorder("a", log))
            mgr.trigger(hooks.RunningHook())
        found = errors(caplog)
        assert log == ["a.running"], cls
        assert len(found) == 1 and "cannot be called from sync context" in found[0], cls


def run_child(code: str) -> str:
    """Run `code` in a child Python (the engine's patches are process-wide by design); its stdout."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_skip_message_typechecks_drops_only_that_check() -> None:
    code = (
        "from addons.runtime import engine\n"
        "from mitmproxy import http\n"
        "from mitmproxy.proxy import utils\n"
        "engine.skip_message_typechecks()\n"
        "r = http.Response.make(200, b'{}', {'content-type': 'application/json'})\n"
        "assert r.status_code == 200 and r.content == b'{}'\n"
        "class S:\n"
        "    @utils.expect(int)\n"
        "    def f(self, e): return e\n"
        "try:\n"
        "    S().f('not an event')\n"
        "except AssertionError:\n"
        "    print('state machine checks kept')\n"
    )
    assert run_child(code) == "state machine checks kept"


def test_task_names_without_the_environment_lookup() -> None:
    code = (
        "import asyncio, os\n"
        "from addons.runtime import engine\n"
        "from mitmproxy.utils import asyncio_utils\n"
        "engine.skip_task_name_env_lookup()\n"
        "os.environ['PYTEST_CURRENT_TEST'] = 'some test'\n"
        "async def main():\n"
        "    t = asyncio_utils.create_task(asyncio.sleep(0), name='handle_hook(request)', keep_ref=False,\n"
        "                                  client=('127.0.0.1', 1))\n"
        "    await t\n"
        "    print(t.get_name(), t.client, t.created > 0)\n"
        "asyncio.run(main())\n"
    )
    assert run_child(code) == "handle_hook(request) ('127.0.0.1', 1) True"


async def test_root_logger_follows_the_console_verbosity_from_the_start() -> None:
    # Debug records nobody prints must not be built on the request path.
    root = logging.getLogger()
    saved = root.level
    root.setLevel(logging.DEBUG)
    opts = options.Options()
    m = engine.LeanMaster(opts, chain=[])
    try:
        await m.running()
        assert root.level == logging.INFO  # termlog's default verbosity
        assert not logging.getLogger("phigate").isEnabledFor(logging.DEBUG)
        opts.update(termlog_verbosity="debug")
        assert root.level == logging.DEBUG
    finally:
        await m.done()
        root.setLevel(saved)
