"""The log: secrets masked where they stand as values, libraries quiet unless debug."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.common.secrets import Secret, read_secret
from agent.service import logs
from agent.service.logs import LIBRARY_LOGGERS, OneLineFormatter, mask_secrets, setup_logging


def _formatted(message: str, *args: object) -> str:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, message, args, None)
    return OneLineFormatter("%(message)s").format(record)


def test_a_secret_read_is_masked_in_a_library_message(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("k-5e4d3c2b1a\n")
    value = read_secret(Secret(file=path))
    assert _formatted("server said: bad key %s", value) == "server said: bad key ***"
    assert _formatted("Authorization: Bearer %s.", value) == "Authorization: Bearer ***."


def test_a_short_secret_that_is_a_word_leaves_the_sentence_alone() -> None:
    # The field report: the password was the word "wrong", and the server's message
    # "wrong user name or password" became "*** user name or password".
    secrets = {"wrong"}
    text = "BadUserAccessDenied: wrong user name or password"
    assert mask_secrets(text, secrets) == text
    # ... but where it stands as a value it is masked
    assert mask_secrets("mqtt://line:wrong@broker:1883", secrets) == "mqtt://line:***@broker:1883"
    assert mask_secrets("password='wrong' user=x", secrets) == "password='***' user=x"
    assert mask_secrets("password=wrong&user=x", secrets) == "password=***&user=x"


def test_only_whole_values_are_replaced() -> None:
    secrets = {"s3cr3t-token"}
    assert mask_secrets("token s3cr3t-token given", secrets) == "token *** given"
    # a longer value that merely contains the secret is another value: left alone
    assert mask_secrets("id xs3cr3t-token9", secrets) == "id xs3cr3t-token9"
    # of two secrets where one contains the other, the longer is masked whole
    assert mask_secrets("a s3cr3t-token-2 b", {"s3cr3t-token", "s3cr3t-token-2"}) == "a *** b"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.parametrize(("level", "shown"), [("info", False), ("warning", False), ("debug", True)])
def test_library_loggers_are_quiet_unless_debug(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch, level: str, shown: bool
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    setup_logging(level)
    # what pymodbus and asyncua log on a silent unit or a server shutdown
    logging.getLogger("pymodbus.logging").error("Frame check failed, ignoring!! 0x01 0x03")
    logging.getLogger("asyncua.client.ua_client").exception("Error while receiving")
    logging.getLogger("floorgate.drivers.modbus").warning("modbus unit not answering")
    text = stream.getvalue()
    assert "modbus unit not answering" in text
    assert ("Frame check failed" in text) is shown
    assert ("Error while receiving" in text) is shown
