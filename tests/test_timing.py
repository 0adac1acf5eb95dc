"""Robust timing (byoc_torch.timing) and the placement decisions built on it, under an
injected, noisy timer: descheduled samples, jitter, margins and the simplest-first tie-break."""

from __future__ import annotations

import random

import pytest

from byoc_torch import _defaults, timing
from byoc_torch.placement import end_to_end
from byoc_torch.timing import Clocks, Timing, choose, robust_time, robust_times, summarize


class VirtualMachine:
    """A fake machine: callables cost virtual time; other processes steal wall time (not CPU
    time) on a share of the calls, and ``jitter`` scales both clocks (as a slower clock would)."""

    def __init__(self, seed: int, steal: float = 0.0, steal_ms: float = 0.0, jitter: float = 0.0):
        self.rng = random.Random(seed)
        self.wall = 0.0
        self.cpu = 0.0
        self.steal, self.steal_ms, self.jitter = steal, steal_ms, jitter

    def clocks(self) -> Clocks:
        return Clocks(wall=lambda: self.wall, cpu=lambda: self.cpu)

    def kernel(self, ms: float):
        def run() -> None:
            cost = ms * (1 + self.rng.uniform(0, self.jitter)) / 1e3
            self.wall += cost
            self.cpu += cost
            if self.rng.random() < self.steal:
                self.wall += self.rng.uniform(0.5, 1.0) * self.steal_ms / 1e3

        return run


def test_descheduled_samples_are_dropped_by_the_cpu_time_cross_check():
    vm = VirtualMachine(0, steal=0.4, steal_ms=5.0)
    t = robust_time(vm.kernel(1.0), clocks=vm.clocks())
    assert t.ms == pytest.approx(1.0, rel=1e-6)
    assert t.cpu_ms == pytest.approx(1.0, rel=1e-6)
    assert t.samples < t.taken  # some were dropped
    assert not t.noisy


def test_without_cpu_times_the_low_quantile_still_resists_bursts():
    wall = [1.0] * 12 + [4.0, 6.0, 9.0]
    t = summarize(wall)
    assert t.ms == pytest.approx(1.0)
    assert t.samples == t.taken == 15


def test_high_spread_is_remeasured_then_reported_noisy():
    vm = VirtualMachine(1, jitter=2.0)  # both clocks: the cross-check cannot help
    t = robust_time(vm.kernel(1.0), clocks=vm.clocks())
    assert t.taken == _defaults.TIMING_MAX_ROUNDS  # re-measured up to the limit
    assert t.noisy and t.spread > _defaults.TIMING_NOISY_SPREAD
    quiet = VirtualMachine(1, jitter=0.01)
    q = robust_time(quiet.kernel(1.0), clocks=quiet.clocks())
    assert q.taken == _defaults.TIMING_ROUNDS and not q.noisy


def test_choose_keeps_the_simplest_inside_the_margin_and_takes_a_clear_win():
    order = ["all-libtorch", "all-tvm", "searched"]
    close = {"all-libtorch": 1.00, "all-tvm": 2.0, "searched": 0.97}
    assert choose(close, order).name == "all-libtorch"
    assert choose(close, order).noisy is False
    clear = {"all-libtorch": 1.00, "all-tvm": 2.0, "searched": 0.60}
    assert choose(clear, order).name == "searched"
    # faster by 20 %, but the spreads are 30 %: not trusted, and said so
    spread = {
        "all-libtorch": Timing(1.0, 0.3),
        "all-tvm": Timing(2.0, 0.1),
        "searched": Timing(0.8, 0.3),
    }
    verdict = choose(spread, order)
    assert verdict.name == "all-libtorch" and verdict.noisy
    assert "searched faster only within the measured spread" in verdict.why
    # a busy machine's wide spreads do not hide a 3x difference (the intervals do not overlap)
    busy = {"all-libtorch": Timing(111.0, 2.0), "all-tvm": None, "searched": Timing(34.0, 0.5)}
    verdict = choose(busy, order)
    assert verdict.name == "searched"
    assert verdict.why == (
        "searched faster than all-libtorch by 69%, beyond the 5% margin and its 50% spread"
    )
    # not timed: never chosen over one that was
    assert choose({"all-libtorch": None, "all-tvm": 2.0}, order).name == "all-tvm"


def _candidates():
    return [
        end_to_end.Candidate("searched", {"a": None}, 0.9),
        end_to_end.Candidate("all-libtorch", {"a": None, "b": None}, 1.0),
        end_to_end.Candidate("all-tvm", {}, 2.5),
    ]


@pytest.mark.parametrize("true_ms", [(1.0, 1.02, 2.5), (1.0, 0.55, 2.5)], ids=["tie", "win"])
def test_the_whole_model_choice_is_kept_under_a_noisy_timer(monkeypatch, true_ms):
    """The same placement with a quiet timer and, for every seed, with a timer that loses
    up to 20 ms to other processes on 40 % of the calls."""
    torch_ms, searched_ms, tvm_ms = true_ms
    cost = {"all-libtorch": torch_ms, "searched": searched_ms, "all-tvm": tvm_ms}
    names = {2: "all-libtorch", 1: "searched", 0: "all-tvm"}

    def decide(vm: VirtualMachine) -> tuple[str, list[str]]:
        monkeypatch.setattr(timing, "DEFAULT_CLOCKS", vm.clocks())
        noise: list[str] = []
        chosen, measured, _ = end_to_end.choose(
            _candidates(), lambda records: vm.kernel(cost[names[len(records)]]), noise=noise
        )
        assert measured[chosen.name] == pytest.approx(cost[chosen.name], rel=0.05)
        return chosen.name, noise

    quiet, _ = decide(VirtualMachine(0))
    assert quiet == ("all-libtorch" if searched_ms > 0.95 * torch_ms else "searched")
    for seed in range(8):
        assert decide(VirtualMachine(seed, steal=0.4, steal_ms=20.0))[0] == quiet


def test_noise_that_hides_a_difference_keeps_the_simplest_and_is_reported(monkeypatch):
    vm = VirtualMachine(3, jitter=1.5)
    monkeypatch.setattr(timing, "DEFAULT_CLOCKS", vm.clocks())
    cost = {2: 1.0, 1: 0.8, 0: 2.5}
    noise: list[str] = []
    chosen, _, _ = end_to_end.choose(
        _candidates(), lambda records: vm.kernel(cost[len(records)]), noise=noise
    )
    assert chosen.name == "all-libtorch"
    assert noise and "within the measured spread" in noise[0]


def test_robust_times_interleaves_contestants():
    order: list[str] = []
    vm = VirtualMachine(0)

    def tagged(name: str):
        k = vm.kernel(1.0)

        def run() -> None:
            order.append(name)
            k()

        return run

    robust_times({"a": tagged("a"), "b": tagged("b")}, clocks=vm.clocks(), sample_ms=1.0)
    timed = order[4:]  # after each one's warm-up and calibration call
    assert timed[:4] == ["a", "b", "a", "b"]
