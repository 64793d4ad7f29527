"""The driver as shipped: which Lustre tools and server sets it can be built on."""

from __future__ import annotations

from pathlib import Path

import pytest

from csi.backends import build_backend
from csi.cli.main import build_parser
from csi.errors import InvalidArgument
from csi.server import DriverConfig


def test_the_shipped_cli_offers_only_the_local_and_kernel_lustre_tools(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The stand-in for servers that run elsewhere is test-only (tests/support/serve_standin.py).
    for tools in ("local", "kernel"):
        assert build_parser().parse_args(["serve", "--lustre-tools", tools]).lustre_tools == tools
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--lustre-tools", "standin"])
    assert "invalid choice: 'standin'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"lustre_tools": "standin"}, "--lustre-tools"), ({"server_sets": "nfs"}, "--server-sets")],
)
def test_a_backend_the_driver_does_not_offer_is_refused_by_name(
    tmp_path: Path, changes: dict[str, str], named: str
) -> None:
    config = DriverConfig(mode="all", endpoint="unix:///x.sock", node_id="n", state_dir=tmp_path)
    for key, value in changes.items():
        setattr(config, key, value)
    with pytest.raises(InvalidArgument, match=named):
        build_backend(config)
    assert list(tmp_path.iterdir()) == []  # nothing was built
