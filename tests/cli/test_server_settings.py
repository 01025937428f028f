"""`stagewise server`'s settings and logs: precedence, bad input at its place, one JSON object per line.

The signals (SIGHUP re-reading the file) are tested on a real server in
tests/e2e/test_server_signals.py; here, what can be decided without one.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stagewise.api.logs import JsonFormatter, TextFormatter, configure_logging
from stagewise.api.settings import ServerSettings, load_settings
from stagewise.cli.main import app
from stagewise.errors import SettingsError

runner = CliRunner()


def test_the_command_line_wins_over_the_file_which_wins_over_the_defaults(tmp_path: Path) -> None:
    file = tmp_path / "server.toml"
    file.write_text('log-level = "debug"\nlog-format = "json"\ntick = "500ms"\nlisten = "127.0.0.1:7500"\n'
                    'resync = "1m"\n')
    fixed = {"listen": None, "log_level": "warning", "log_format": None, "tick": None}
    assert load_settings(file, fixed) == ServerSettings(listen="127.0.0.1:7500", log_level="warning",
                                                       log_format="json", tick=0.5, resync=60.0)
    assert load_settings(tmp_path / "missing.toml", fixed) == ServerSettings(log_level="warning")
    assert load_settings(None, {}) == ServerSettings()


@pytest.mark.parametrize(("text", "where", "words"), [
    ('log-level = "debug"\nlog-levl = "info"\n', ":2:1: log-levl: not a setting; expected one of", "log-level"),
    ('tick = "fast"\n', ":1:1: tick: expected a duration such as 500ms", "'fast'"),
    ('tick = 0\n', ":1:1: tick: expected more than 0 and at most 60 seconds", "0"),
    ('resync = "2h"\n', ":1:1: resync: expected 0 (every pass) up to 3600 seconds", "'2h'"),
    ('\n\nlog-format = "yaml"\n', ":3:1: log-format: expected one of text, json", "'yaml'"),
    ('listen = "7420"\n', ":1:1: listen: expected host:port", "'7420'"),
    ('log-level = "debug\n', ":1:", "not TOML"),
    ('tick = 1\ntick = 2\n', ":2:", "not TOML"),
    ('state = "/srv"\n', ":1:1: state: not a setting", "listen, log-level, log-format, tick"),
])
def test_a_bad_settings_file_is_refused_at_its_line(tmp_path: Path, text: str, where: str, words: str) -> None:
    file = tmp_path / "server.toml"
    file.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings(file, {})
    assert f"{file}{where}" in str(caught.value) and words in str(caught.value), str(caught.value)
    result = runner.invoke(app, ["server", "--state", str(tmp_path / "state"), "--settings", str(file)])
    assert result.exit_code == 2 and f"{file}{where}" in result.stderr, result.output
    assert not (tmp_path / "state").exists(), "a refused start must leave nothing behind"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--log-format", "xml", "--log-format: expected one of text, json, got 'xml'"),
    ("--log-level", "loud", "--log-level: expected one of debug, info, warning, error, got 'loud'"),
    ("--tick", "-1s", "--tick: expected a duration such as 500ms"),
    ("--listen", "localhost", "--listen: expected host:port"),
])
def test_a_bad_option_is_refused_by_its_name(tmp_path: Path, option: str, value: str, message: str) -> None:
    result = runner.invoke(app, ["server", "--state", str(tmp_path), option, value])
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_an_option_in_the_environment_is_checked_like_one_on_the_command_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["server", "--state", str(tmp_path)], env={"STAGEWISE_LOG_FORMAT": "xml"})
    assert result.exit_code == 2 and "--log-format: expected one of text, json" in result.stderr


def record(message: str, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("stagewise.controller")
    return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None, extra=extra)


def test_a_json_log_line_is_one_object_with_its_context() -> None:
    try:
        raise KeyError("routes")
    except KeyError:
        import sys

        rec = record("shop: it broke\non two lines", service="shop", delivery=7, exc=object())
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "stagewise.controller"
    assert entry["message"] == "shop: it broke\non two lines"
    assert entry["service"] == "shop" and entry["delivery"] == 7 and entry["exc"].startswith("<object")
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]
    assert "KeyError: 'routes'" in entry["exception"]


def test_a_text_log_line_puts_the_context_after_the_message() -> None:
    line = TextFormatter().format(record("shop: it broke", service="shop", delivery=7))
    assert line.endswith("WARNING stagewise.controller: shop: it broke service=shop delivery=7"), line


def test_logging_is_reconfigured_in_place(capsys: pytest.CaptureFixture[str]) -> None:
    root, ours = logging.getLogger(), logging.getLogger("stagewise")
    handlers, level, our_level = list(root.handlers), root.level, ours.level
    try:
        configure_logging("info", "text")
        configure_logging("warning", "json")  # as on SIGHUP: the same handler, a new format and level
        handler = [h for h in root.handlers if h.get_name() == "stagewise"]
        assert len(handler) == 1 and isinstance(handler[0].formatter, JsonFormatter)
        stream = io.StringIO()
        assert isinstance(handler[0], logging.StreamHandler)
        handler[0].setStream(stream)
        logging.getLogger("stagewise.events").info("not shown at warning")
        logging.getLogger("stagewise.events").warning("shown", extra={"service": "shop"})
        configure_logging("debug", "json")
        logging.getLogger("stagewise.controller").debug("ours at debug")
        logging.getLogger("httpx").info("HTTP Request: GET http://stagewise-router/stats")  # a library: never
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["shown", "ours at debug"]
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
        ours.setLevel(our_level)
