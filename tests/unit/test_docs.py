"""The README's commands cannot rot: each one it names must exist, and CI must run its test command."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mitmproxy import options as mitm_options
from mitmproxy.addonmanager import Loader
from mitmproxy.master import Master

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def run_sh_commands() -> set[str]:
    text = (ROOT / "run.sh").read_text()
    block = text[text.index('case "$cmd" in'):]
    found: set[str] = set()
    for m in re.finditer(r"^\s{2}([a-z| -]+)\)\s*$", block, re.M):
        found |= {c.strip() for c in m.group(1).split("|")}
    return found


def test_ci_runs_the_readme_test_command() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert blocks[0].strip() == "./run.sh demo", "the README's first command is the demo"
    assert blocks[1].strip() == "./run.sh test", "the README's second command is the test suite"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\./run\.sh test$", ci, re.M)


def test_every_run_sh_command_in_the_readme_exists() -> None:
    named = set(re.findall(r"\./run\.sh ([a-z]+)", README))
    assert named, "the README names run.sh commands"
    assert named <= run_sh_commands(), named - run_sh_commands()


def test_every_gateway_flag_in_the_readme_exists() -> None:
    out = subprocess.run([str(ROOT / ".phigate" / "venv" / "bin" / "python"), "-m", "addons.runtime.launch", "--help"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    section = README[README.index("## Running the gateway"):README.index("## How it works")]
    gateway_lines = "\n".join(line for line in section.splitlines() if "run.sh keys" not in line)
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", gateway_lines)) - {"--mode", "--set", "--certs"}
    assert flags, "the README shows gateway flags"
    missing = {f for f in flags if f not in out}
    assert not missing, f"README flags not accepted by ./run.sh gateway: {missing}"


async def declared_options() -> dict[str, str]:
    """Every phigate_* option the chain declares -> its help text."""
    import addons.chain as chain

    opts = mitm_options.Options()
    master = Master(opts)
    for addon in chain.build():
        load = getattr(addon, "load", None)
        if load:
            load(Loader(master))
    return {k: opts._options[k].help for k in opts.keys() if k.startswith("phigate_")}


def options_table() -> set[str]:
    section = README[README.index("### Options"):README.index("## How it works")]
    return set(re.findall(r"^\| `(phigate_[a-z_0-9]+)` \|", section, re.M))


async def test_every_phigate_option_in_the_readme_is_declared_by_an_addon() -> None:
    declared = await declared_options()
    named = set(re.findall(r"\b(phigate_[a-z_0-9]+)", README))
    assert named, "the README names options"
    assert named <= set(declared), f"README names options no addon declares: {sorted(named - set(declared))}"


async def test_every_declared_option_has_a_row_in_the_readme_options_table() -> None:
    declared = await declared_options()
    assert len(declared) > 20
    missing = set(declared) - options_table()
    assert not missing, f"options missing from the README's Options table: {sorted(missing)}"
    for name, help_text in declared.items():
        assert help_text.strip(), f"{name} has no help text"


def test_run_sh_help_lists_every_command_with_what_it_does() -> None:
    out = subprocess.run([str(ROOT / "run.sh"), "help"], capture_output=True, text=True, check=True).stdout
    described = {m.group(1): m.group(2) for m in re.finditer(r"^\s{2}([a-z-]+)\s{2,}(\S.*)$", out, re.M)}
    commands = run_sh_commands() - {"help", "-h", "--help"}
    assert commands <= set(described), f"./run.sh help does not describe: {sorted(commands - set(described))}"
    assert set(described) <= commands | {"help"}, f"./run.sh help lists unknown commands: {set(described) - commands}"
