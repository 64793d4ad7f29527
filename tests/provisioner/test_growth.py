import pytest

from csi.errors import CapacityExhausted
from provisioner.growth import plan_growth

TIB = 1 << 40


def plan(**kwargs):
    args = dict(
        fsname="scratch", required_bytes=0, current_total_bytes=TIB, current_osts=1,
        ost_size_bytes=TIB, threshold=0.8, max_osts=8,
    )
    args.update(kwargs)
    return plan_growth(**args)


def test_reservation_under_threshold_adds_nothing():
    result = plan(required_bytes=int(0.8 * TIB))
    assert (result.add, result.target_osts, result.target_total_bytes) == (0, 1, TIB)


def test_reservation_just_past_threshold_adds_one_ost():
    result = plan(required_bytes=int(0.8 * TIB) + 1)
    assert (result.add, result.target_osts) == (1, 2)


def test_large_reservation_adds_enough_osts_in_one_step():
    # 3 TiB at 80% needs 3.75 TiB: 4 OSTs.
    result = plan(required_bytes=3 * TIB)
    assert (result.add, result.target_osts, result.target_total_bytes) == (3, 4, 4 * TIB)


def test_repeating_the_request_against_the_grown_set_adds_nothing():
    first = plan(required_bytes=3 * TIB)
    again = plan(required_bytes=3 * TIB, current_osts=first.target_osts,
                 current_total_bytes=first.target_total_bytes)
    assert again.add == 0


def test_max_osts_is_enforced_with_a_message_naming_it():
    with pytest.raises(CapacityExhausted, match="maxOsts is 2"):
        plan(required_bytes=3 * TIB, max_osts=2)


def test_max_size_is_enforced_with_a_message_naming_it():
    with pytest.raises(CapacityExhausted, match="maxSize"):
        plan(required_bytes=3 * TIB, max_total_bytes=2 * TIB)


def test_limits_do_not_refuse_a_request_that_needs_no_growth():
    # A file system already past its (lowered) limits still serves what fits.
    assert plan(required_bytes=TIB // 2, current_osts=4, current_total_bytes=4 * TIB,
                max_osts=2).add == 0


def test_measured_use_past_the_threshold_adds_osts_even_when_reservations_fit():
    # 0.5 TiB reserved fits 1 TiB at 80%, but 0.9 TiB is in use (data outside quotas).
    result = plan(required_bytes=TIB // 2, used_bytes=int(0.9 * TIB))
    assert (result.add, result.target_osts, result.sized_for) == (1, 2, int(0.9 * TIB))


def test_measured_use_past_the_limits_never_refuses_what_the_reservations_allow():
    result = plan(required_bytes=TIB // 2, used_bytes=3 * TIB, max_osts=2)
    assert (result.add, result.sized_for) == (0, TIB // 2)
    with pytest.raises(CapacityExhausted, match="maxOsts is 2"):
        plan(required_bytes=3 * TIB, used_bytes=3 * TIB, max_osts=2)
