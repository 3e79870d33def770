"""Shared fixtures: real servers on loopback (the OpenID provider, Chroma) and a gateway factory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from addons.config import rulefiles
from addons.core import readiness
from tests.support.servers import DEFAULT_RUNNER, ROOT, Chroma, Gateway, Idp, lean_options

# The backend credential the gateway injects upstream in tests (never a caller's token).
BACKEND_CREDENTIAL = "test-backend-credential-5f2a"
# The masking addon refuses to start without a token key (rules/masking.yaml tokenizes): every gateway
# a test starts, however it is launched (gateway_factory, ./run.sh gateway, mitmdump), inherits this
# test-only key through the environment.
TEST_TOKEN_KEYS = "k1=a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="
os.environ.setdefault("PHIGATE_TOKEN_KEYS", TEST_TOKEN_KEYS)


@pytest.fixture(autouse=True)
def _fresh_rule_files() -> Iterator[None]:
    # Rule files are memoized per process; unit tests load them from many temporary folders.
    rulefiles.forget_all()
    yield
    rulefiles.forget_all()


@pytest.fixture(autouse=True)
def _fresh_readiness() -> Iterator[None]:
    # Readiness checks are process-wide (one gateway per process); an addon a test built, e.g. an
    # audit addon with a full disk, must not make the next test's gateway "not ready".
    saved = dict(readiness._readiness)
    yield
    readiness._readiness.clear()
    readiness._readiness.update(saved)


@pytest.fixture(scope="session")
def idp() -> Iterator[Idp]:
    with Idp() as server:
        yield server


@pytest.fixture(scope="session")
def chroma() -> Iterator[Chroma]:
    with Chroma() as server:
        yield server


def gateway_options(idp: Idp, workdir: Path) -> dict[str, str]:
    """Options for a complete gateway in tests; each addon reads its own, the rest are ignored."""
    return {
        "phigate_rules": str(ROOT / "rules"),
        "phigate_profile": "chroma",
        "phigate_issuer": idp.issuer,
        "phigate_audience": "phigate",
        "phigate_backend_credential_env": "PHIGATE_TEST_BACKEND_CREDENTIAL",
        "phigate_audit_dir": str(workdir / "audit"),
        "phigate_allow_plain_http": "true",
        # Approvals: each test gateway keeps its own hold store and opens no admin listener unless
        # the test asks (a fixed default port would collide between parallel gateways).
        "phigate_holds_db": str(workdir / "holds.sqlite"),
        "phigate_admin_port": "0",
        # No periodic health calls: tests count what reaches their upstreams. The backend check has
        # its own tests (tests/integration/test_readiness_gateway.py).
        "phigate_backend_check_s": "0",
        # The test IdP's resource scope: the console's access token is then a JWT for phigate.
        "phigate_console_scope": "openid vectors",
    }


@pytest.fixture
def gateway_factory(idp: Idp, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways in front of `upstream`; keyword options override the defaults above."""
    started: list[Gateway] = []

    def start(upstream: str, runner: str = DEFAULT_RUNNER, env: dict[str, str] | None = None,
              **options: Any) -> Gateway:
        defaults = gateway_options(idp, tmp_path)
        if runner == "lean":
            # The lean engine rejects unknown options; defaults meant for addons not (yet) in the
            # chain are dropped here. Options a test passes explicitly are passed as given.
            defaults = {k: v for k, v in defaults.items() if k in lean_options()}
        opts = {**defaults, **{k: str(v) for k, v in options.items()}}
        gw = Gateway(upstream, opts, env={"PHIGATE_TEST_BACKEND_CREDENTIAL": BACKEND_CREDENTIAL,
                                          # test-only token key (masking refuses to start without one)
                                          "PHIGATE_TOKEN_KEYS": "k1=a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
                                          **os.environ, **(env or {})}, runner=runner)
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under `./run.sh test` (PHIGATE_NO_SKIPS=1) a skipped test fails the run.

    Tests skip when a tool the setup installs is missing (chromium, poppler, HAProxy, the Milvus or
    clients venv): fine while developing, but in CI a skip would hide a broken install
    step behind a green run."""
    if os.environ.get("PHIGATE_NO_SKIPS") != "1" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        if reporter is not None:
            reporter.write_line(f"PHIGATE_NO_SKIPS=1: {len(skipped)} test(s) skipped; failing the run "
                                "(something ./run.sh setup installs is missing)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
