"""Progress of long work outside training: a bar on a terminal; start, tenths and end lines in logs and pipes."""

from __future__ import annotations

import logging

from kdrun import progress as progress_module
from kdrun.progress import Counter


def test_a_pipe_gets_a_start_line_each_tenth_once_and_an_end_line(caplog, monkeypatch):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level(logging.INFO, logger="kdrun"):
        with Counter(200, "filling", unit="row") as counter:
            for step in (5, 15, 50, 100, 30):  # 5%, 10%, 35%, 85%, 100%
                counter.update(step)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "filling: 200 rows ..."
    assert [line.split(" (")[0] for line in lines[1:-1]] == ["filling: 10%", "filling: 30%", "filling: 80%"]
    assert lines[-1].startswith("filling: 200 rows in ")
    assert counter.done == 200


def test_a_terminal_gets_a_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: True, raising=False)
    with Counter(10, "filling", unit="row") as counter:
        counter.update(10)
    assert counter._bar is not None and counter._bar.n == 10
