"""The adapters' state file failing under the admin API (disk full, unwritable): every change is refused with a
503 in OpenAI's shape and nothing changes, in memory, on disk or on the engines. Against the fake engine of
tests/test_hotswap.py, with the gateway on real sockets."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.test_hotswap import FakeEngine, Serve, _admin, _ask, _gateway, _wait_for, engine, roots

__all__ = ["engine", "roots"]


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """os.fsync fails as on a full disk (the state file is fsynced before its rename); returns the cure."""

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    return monkeypatch.undo


def _unwritable(state: Path) -> Callable[[], None]:
    """The state file's directory replaced by a plain file (works as root too, unlike chmod)."""
    saved = state.read_bytes()
    shutil.rmtree(state.parent)
    state.parent.write_text("not a directory")

    def cure() -> None:
        state.parent.unlink()
        state.parent.mkdir()
        state.write_bytes(saved)

    return cure


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "state_unwritable" and error["type"] == "service_unavailable"
    assert set(error) == {"message", "type", "param", "code"} and "No space" not in error["message"]


@pytest.mark.parametrize("fault", ["disk_full", "unwritable"])
def test_a_swap_whose_state_cannot_be_written_changes_nothing(
    serve_app: Serve,
    tmp_path: Path,
    engine: tuple[FakeEngine, str],
    roots: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    fake, upstream = engine
    state = tmp_path / "state" / "adapters.json"
    with _gateway(serve_app, tmp_path, [upstream], roots, state_file=state) as url, _admin(url) as admin:
        _wait_for(state.exists, "the gateway did not write its state at start-up")
        before_listing = admin.get("/admin/adapters").json()
        before_disk = state.read_bytes()
        before_engine = dict(fake.adapters)
        cure = _disk_full(monkeypatch) if fault == "disk_full" else _unwritable(state)

        _refused(admin.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")}))
        _refused(admin.post("/admin/adapters/helper/versions", json={"path": str(roots / "helper-v2")}))
        _refused(admin.post("/admin/adapters/helper/retire"))
        assert admin.get("/admin/adapters").json() == before_listing  # memory unchanged
        assert fake.adapters == before_engine  # the version loaded for the swap was unloaded again
        assert _ask(admin).json()["choices"][0]["message"]["content"] == "answered by helper"
        cure()
        assert state.read_bytes() == before_disk  # disk unchanged

        # Once the disk is fine again, the same swap goes through, and a failed rollback leaves it in place.
        swapped = admin.post("/admin/adapters/helper/swap", json={"path": str(roots / "helper-v2")})
        assert swapped.status_code == 200, swapped.text
        new = swapped.json()["served_name"]
        after_swap = admin.get("/admin/adapters").json()
        cure = _disk_full(monkeypatch) if fault == "disk_full" else _unwritable(state)
        _refused(admin.post("/admin/adapters/helper/rollback"))
        listing = admin.get("/admin/adapters").json()
        assert [a["history"] for a in listing["data"]] == [a["history"] for a in after_swap["data"]]
        assert _ask(admin).json()["choices"][0]["message"]["content"] == f"answered by {new}"
        cure()
        assert admin.post("/admin/adapters/helper/rollback").status_code == 200
