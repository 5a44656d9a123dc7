"""The round state machine with a fake clock: quorum, deadline, grace, restart, completion."""

import pytest

from coordinator.rounds import RoundError, RoundMachine, RoundPolicy, RoundState


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _machine(**policy):
    clock = Clock()
    defaults = {"rounds": 3, "min_nodes": 2, "round_timeout_s": 10.0, "grace_s": 5.0}
    return RoundMachine(RoundPolicy(**{**defaults, **policy}), clock=clock), clock


def test_waits_for_the_quorum_then_trains():
    m, _ = _machine()
    m.join("a")
    assert m.state is RoundState.WAITING_FOR_NODES
    m.join("b")
    assert m.state is RoundState.TRAINING and m.participants == {"a", "b"} and m.round == 1


def test_all_uploads_aggregate_and_rounds_run_to_done():
    m, _ = _machine()
    m.join("a")
    m.join("b")
    for r in (1, 2, 3):
        assert m.accept_upload("a", r) and m.accept_upload("b", r)
        assert m.state is RoundState.AGGREGATING
        m.round_committed()
    assert m.state is RoundState.DONE and m.completed_rounds == 3


def test_a_duplicate_upload_counts_once():
    m, _ = _machine(min_nodes=2)
    m.join("a")
    m.join("b")
    assert m.accept_upload("a", 1) is True
    assert m.accept_upload("a", 1) is False and m.uploaded == {"a"}


def test_a_dead_node_does_not_block_the_round():
    m, clock = _machine(min_nodes=2, start_nodes=3)
    for n in "abc":
        m.join(n)
    m.accept_upload("a", 1)
    m.accept_upload("b", 1)
    m.leave("c")  # killed mid-round
    clock.now = 9.9
    m.tick()
    assert m.state is RoundState.TRAINING
    clock.now = 10.0
    m.tick()
    assert m.state is RoundState.AGGREGATING and "quorum met" in m.transitions[-1][3]


def test_no_quorum_gets_grace_then_a_restart():
    m, clock = _machine(min_nodes=2)
    m.join("a")
    m.join("b")
    m.accept_upload("a", 1)
    clock.now = 10.0
    m.tick()
    assert m.state is RoundState.TRAINING and m.in_grace and m.deadline == 15.0
    clock.now = 15.0
    m.tick()
    assert (
        m.state is RoundState.TRAINING
        and m.round == 1
        and m.uploaded == set()
        and "restarted" in m.transitions[-1][3]
    )


def test_too_few_live_nodes_after_grace_waits_again():
    m, clock = _machine(min_nodes=2)
    m.join("a")
    m.join("b")
    m.leave("b")
    clock.now = 10.0
    m.tick()
    clock.now = 15.0
    m.tick()
    assert m.state is RoundState.WAITING_FOR_NODES
    m.join("c")
    assert m.state is RoundState.TRAINING and m.participants == {"a", "c"}


def test_uploads_that_do_not_fit_the_round_are_refused():
    m, _ = _machine()
    with pytest.raises(RoundError, match="no round"):
        m.accept_upload("a", 1)
    m.join("a")
    m.join("b")
    with pytest.raises(RoundError, match="current round is 1"):
        m.accept_upload("a", 2)
    with pytest.raises(RoundError, match="not a participant"):
        m.accept_upload("z", 1)
    with pytest.raises(RoundError, match="cannot commit"):
        m.round_committed()


def test_a_restart_resumes_after_the_last_completed_round():
    m = RoundMachine(RoundPolicy(rounds=5, min_nodes=1), completed_rounds=3)
    m.join("a")
    assert m.round == 4 and m.state is RoundState.TRAINING
    assert RoundMachine(RoundPolicy(rounds=3), completed_rounds=3).state is RoundState.DONE


def test_every_transition_is_recorded():
    m, _ = _machine(rounds=1, min_nodes=1)
    m.join("a")
    m.accept_upload("a", 1)
    m.round_committed()
    assert [(t[1], t[2]) for t in m.transitions] == [
        ("waiting_for_nodes", "training"),
        ("training", "aggregating"),
        ("aggregating", "done"),
    ]


def test_a_node_joining_mid_round_takes_part_and_each_start_is_counted():
    m, _ = _machine()
    m.join("a")
    m.join("b")
    assert m.starts == 1
    m.join("c")  # e.g. a node restarted after a crash
    assert m.participants == {"a", "b", "c"} and m.accept_upload("c", 1)
    m.accept_upload("a", 1)
    assert m.state is RoundState.TRAINING  # b is still expected
    m.accept_upload("b", 1)
    m.round_committed()
    assert m.starts == 2 and m.round == 2
