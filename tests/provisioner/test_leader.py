from provisioner.kubevirt.leader import LeaseState, decide


def test_no_lease_is_acquired():
    decision = decide(None, "a", 0, "t1", 15)
    assert decision.leading and decision.state == LeaseState("a", 15, 0, "t1")


def test_holder_renews_and_keeps_the_transition_count():
    decision = decide(LeaseState("a", 15, 3, "t0"), "a", 100, "t1", 15)
    assert decision.leading and decision.state == LeaseState("a", 15, 3, "t1")


def test_a_live_leader_is_not_challenged():
    decision = decide(LeaseState("a", 15, 0, "t0"), "b", 14.9, "t1", 15)
    assert not decision.leading and not decision.write


def test_an_expired_or_released_lease_is_taken_over():
    expired = decide(LeaseState("a", 15, 2, "t0"), "b", 15.0, "t1", 15)
    assert expired.leading and expired.state == LeaseState("b", 15, 3, "t1")
    released = decide(LeaseState("", 1, 2, "t0"), "b", 0.0, "t1", 15)
    assert released.leading and released.state.transitions == 3
