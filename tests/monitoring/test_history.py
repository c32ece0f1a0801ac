"""The last hour of backlog and events/s behind the status page's charts."""

from __future__ import annotations

from agent.monitoring.history import History


def test_events_per_second_is_the_count_made_between_two_points() -> None:
    history = History(interval=10, span=3600)
    assert history.take(1000.0, pending=5, events=100) == (1000.0, 5, None)  # nothing before
    assert history.take(1010.0, pending=7, events=150) == (1010.0, 7, 5.0)
    assert history.peek(1015.0, pending=0, events=160) == (1015.0, 0, 2.0)
    assert len(history.points) == 2  # peek keeps nothing


def test_a_rebuilt_engine_counting_from_zero_gives_no_rate_rather_than_a_negative_one() -> None:
    history = History(interval=10, span=3600)
    history.take(1000.0, pending=0, events=500)
    assert history.take(1010.0, pending=0, events=3)[2] is None
    assert history.take(1020.0, pending=0, events=13)[2] == 1.0


def test_memory_is_bounded_to_the_last_hour() -> None:
    history = History(interval=10, span=3600)
    for i in range(1000):
        history.take(1000.0 + 10 * i, pending=i, events=i)
    assert len(history.points) == 360
    assert history.points[0][0] == 1000.0 + 10 * 640
    last_hour = history.last_hour(20000.0, pending=1, events=1000)
    assert len(last_hour) == 361 and last_hour[-1][:2] == (20000.0, 1)
