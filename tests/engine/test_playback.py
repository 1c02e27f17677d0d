"""engine.video.playback: the viewer's controls and real-time pacing (pure logic)."""

import threading
import time

from engine.video.playback import Controls, Pacer


def test_a_late_frame_is_passed_over_only_when_a_newer_one_waits():
    pacer = Pacer(fps=10)
    assert pacer.admit(0, now=100.0)  # starts the clock
    assert pacer.admit(1, now=100.1)  # on time
    assert not pacer.admit(2, newer_waiting=True, now=100.35)  # frame 3 is due: pass over
    assert pacer.admit(2, newer_waiting=False, now=100.35)  # decoding is slow: show it
    assert pacer.admit(3, now=100.3 + 0.05)
    assert pacer.admit(4, newer_waiting=True, now=101.5)  # over 1 s late: the clock restarts
    assert pacer.admit(5, now=101.6)


def test_pacer_waits_until_a_frame_is_due():
    pacer = Pacer(fps=50)
    pacer.admit(0)
    stop = threading.Event()
    t0 = time.perf_counter()
    pacer.wait(5, stop)  # 0.1 s after frame 0
    assert time.perf_counter() - t0 >= 0.08


def test_a_seek_never_lends_its_step_to_a_frame_read_before_it():
    c = Controls(realtime=True)
    c.set_paused(True)
    assert not c.may_run()
    _, generation = c.take_seek()
    c.seek(40)  # while a frame of the old generation is in hand
    assert c.may_run()  # the seek's frame will be shown although paused
    assert c.take_frame(generation) is None  # the old frame is dropped, the step kept
    target, new = c.take_seek()
    assert (target, new) == (40, generation + 1)
    assert c.take_frame(new) is True  # the sought frame uses the step
    assert not c.may_run()
    c.step()
    assert c.take_frame(new) is True
    c.set_paused(False)
    assert c.take_frame(new) is False  # playing: no step, paced
