"""The request log is written in batches, in order, and never lost behind another record."""

from __future__ import annotations

import io
import logging
import time

from fhir_imaging.logs import REQUEST_LOGGER, BufferedStreamHandler


def _loggers(handler: logging.Handler) -> tuple[logging.Logger, logging.Logger]:
    requests, other = logging.getLogger(f"test.{REQUEST_LOGGER}"), logging.getLogger("test.other")
    for logger in (requests, other):
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return requests, other


def test_request_lines_wait_for_a_flush_and_other_records_flush_everything_in_order() -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, buffered=f"test.{REQUEST_LOGGER}")
    handler.setFormatter(logging.Formatter("%(message)s"))
    requests, other = _loggers(handler)
    requests.info("GET /a 200")
    requests.info("GET /b 200")
    assert stream.getvalue() == ""
    other.info("shutting down")
    assert stream.getvalue() == "GET /a 200\nGET /b 200\nshutting down\n"
    requests.info("GET /c 200")
    handler.close()
    assert stream.getvalue().endswith("shutting down\nGET /c 200\n")


def test_the_writer_thread_flushes_on_its_own() -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, buffered=f"test.{REQUEST_LOGGER}")
    handler.setFormatter(logging.Formatter("%(message)s"))
    requests, _ = _loggers(handler)
    handler.flush_periodically(0.01)
    requests.info("GET /a 200")
    deadline = time.monotonic() + 5
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    handler.close()
    assert stream.getvalue() == "GET /a 200\n"


def test_the_time_of_a_line_is_what_the_stock_formatter_writes() -> None:
    from fhir_imaging.logs import FORMAT, _Formatter

    ours, stock = _Formatter(FORMAT), logging.Formatter(FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.5, 1_700_000_000.999, 1_700_000_001.25, 1_800_000_123.004):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == stock.format(record)
