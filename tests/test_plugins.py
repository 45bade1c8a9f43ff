"""Discovery of frontends and renderers through entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from frontends.tty import TerminalFrontend
from renderers.base import Renderer
from thehat import plugins
from thehat.plugins import FRONTEND_GROUP, PluginError, load_frontends, load_renderers


def use_entry_points(monkeypatch: pytest.MonkeyPatch, *values: tuple[str, str]) -> None:
    """Make `entry_points(group=...)` return these (name, value) pairs for every group."""
    def fake_entry_points(group: str) -> list[EntryPoint]:
        return [EntryPoint(name, value, group) for name, value in values]

    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)


def test_installed_tty_frontend_found() -> None:
    assert load_frontends()["tty"] is TerminalFrontend


def test_installed_renderers_are_renderers() -> None:
    renderers = load_renderers()

    assert "text" in renderers
    assert all(issubclass(cls, Renderer) for cls in renderers.values())


def test_frontends_keyed_by_entry_point_name(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch, ("terminal", "frontends.tty:TerminalFrontend"))

    assert load_frontends() == {"terminal": TerminalFrontend}


def test_failed_import_names_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch, ("matrix", "thehat_matrix_not_installed:MatrixFrontend"))

    with pytest.raises(PluginError) as caught:
        load_frontends()

    message = str(caught.value)
    assert f"entry point 'matrix' in group {FRONTEND_GROUP}" in message
    assert "thehat_matrix_not_installed:MatrixFrontend" in message
    assert "failed to import" in message
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_wrong_base_class_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch, ("text", "renderers.text:TextRenderer"))

    with pytest.raises(PluginError, match=r"is not a subclass of frontends\.base\.Frontend"):
        load_frontends()


def test_function_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch, ("main", "thehat.cli:main"))

    with pytest.raises(PluginError, match=r"'main' .* is not a subclass of renderers\.base"):
        load_renderers()
