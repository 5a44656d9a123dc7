"""The round state machine: quorum, deadline and grace, so no dead or slow node blocks a round.

    WAITING_FOR_NODES --quorum joined--> TRAINING --all uploaded, or deadline with quorum-->
    AGGREGATING --round committed--> TRAINING (next round) ... --last round--> DONE

At the deadline with fewer uploads than the quorum, the round gets one grace period; if the
quorum is still missing the round restarts with the nodes alive then (its uploads are dropped).
Plain logic with an injectable clock: the servicer calls it, metrics read `transitions`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class RoundState(enum.Enum):
    WAITING_FOR_NODES = "waiting_for_nodes"
    TRAINING = "training"
    AGGREGATING = "aggregating"
    DONE = "done"


@dataclass(frozen=True, kw_only=True)
class RoundPolicy:
    rounds: int = 10  # rounds to run in total
    min_nodes: int = 2  # quorum: uploads needed for a round to count
    start_nodes: int = 0  # live nodes to wait for before a round starts (0 = min_nodes)
    round_timeout_s: float = 600.0
    grace_s: float = 60.0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.min_nodes < 1:
            raise ValueError("rounds and min_nodes must be at least 1")
        if self.start_nodes and self.start_nodes < self.min_nodes:
            raise ValueError("start_nodes must be 0 or at least min_nodes")
        if not (self.round_timeout_s > 0 and self.grace_s >= 0):
            raise ValueError("round_timeout_s must be positive and grace_s non-negative")


class RoundError(ValueError):
    """A request that does not fit the current round (maps to FAILED_PRECONDITION)."""


@dataclass
class RoundMachine:
    policy: RoundPolicy
    completed_rounds: int = 0  # restored from the durable state on restart
    clock: Callable[[], float] = time.monotonic
    state: RoundState = RoundState.WAITING_FOR_NODES
    nodes: set[str] = field(default_factory=set)  # joined and alive
    participants: frozenset[str] = frozenset()
    uploaded: set[str] = field(default_factory=set)
    deadline: float = 0.0
    in_grace: bool = False
    starts: int = 0  # rounds started (restarts included): a new value means a fresh aggregate
    transitions: list[tuple[int, str, str, str]] = field(
        default_factory=list
    )  # (round, from, to, why)

    def __post_init__(self) -> None:
        if self.completed_rounds >= self.policy.rounds:
            self.state = RoundState.DONE

    @property
    def round(self) -> int:
        return self.completed_rounds + 1

    def _move(self, to: RoundState, why: str) -> None:
        self.transitions.append((self.round, self.state.value, to.value, why))
        self.state = to

    def _start_round(self, why: str) -> None:
        self.participants = frozenset(self.nodes)
        self.uploaded = set()
        self.starts += 1
        self.deadline = self.clock() + self.policy.round_timeout_s
        self.in_grace = False
        self._move(RoundState.TRAINING, why)

    def join(self, node: str) -> None:
        """A node (re)joins; a waiting federation starts once the quorum is there. A node that
        joins while a round is training takes part in it (a restarted node is not left out)."""
        self.nodes.add(node)
        if self.state is RoundState.TRAINING:
            self.participants = self.participants | {node}
        wanted = self.policy.start_nodes or self.policy.min_nodes
        if self.state is RoundState.WAITING_FOR_NODES and len(self.nodes) >= wanted:
            self._start_round(f"{wanted} nodes joined")

    def leave(self, node: str) -> None:
        """A node is gone (stopped heartbeating); its round upload, if any, still counts."""
        self.nodes.discard(node)

    def accept_upload(self, node: str, round_id: int) -> bool:
        """Record an upload; False if this node already uploaded this round (counts once)."""
        if self.state is not RoundState.TRAINING:
            raise RoundError(f"no round is accepting uploads (state {self.state.value})")
        if round_id != self.round:
            raise RoundError(f"upload is for round {round_id}, the current round is {self.round}")
        if node not in self.participants:
            raise RoundError(f"{node!r} is not a participant of round {self.round}")
        if node in self.uploaded:
            return False
        self.uploaded.add(node)
        if self.uploaded == set(self.participants):
            self._move(RoundState.AGGREGATING, "every participant uploaded")
        return True

    def tick(self) -> None:
        """Apply the deadline: aggregate with a quorum, else one grace period, else restart."""
        if self.state is not RoundState.TRAINING or self.clock() < self.deadline:
            return
        if len(self.uploaded) >= self.policy.min_nodes:
            self._move(
                RoundState.AGGREGATING, f"deadline with {len(self.uploaded)} uploads (quorum met)"
            )
        elif not self.in_grace and self.policy.grace_s > 0:
            self.in_grace = True
            self.deadline = self.clock() + self.policy.grace_s
            self.transitions.append(
                (self.round, "training", "training", "deadline without quorum: grace period")
            )
        elif len(self.nodes) >= self.policy.min_nodes:
            self._start_round("quorum missed after grace: round restarted with the live nodes")
        else:
            self._move(
                RoundState.WAITING_FOR_NODES, "quorum missed after grace and too few live nodes"
            )

    def round_committed(self) -> None:
        """The aggregate is durable: advance to the next round, or finish."""
        if self.state is not RoundState.AGGREGATING:
            raise RoundError(f"cannot commit a round in state {self.state.value}")
        self.completed_rounds += 1
        if self.completed_rounds >= self.policy.rounds:
            self._move(RoundState.DONE, "all rounds completed")
        elif len(self.nodes) >= self.policy.min_nodes:
            self._start_round("next round")
        else:
            self._move(RoundState.WAITING_FOR_NODES, "too few live nodes for the next round")
