"""The quota filter the dispatcher applies before the scheduler (pure: no DB, no clock)."""

from __future__ import annotations

from river_server.quotas import Limit, QuotaPolicy, Want, admit


def policy(**kw: object) -> QuotaPolicy:
    return QuotaPolicy(**kw)  # type: ignore[arg-type]


def test_no_quotas_admit_everything_in_order() -> None:
    wants = [Want(i, "a", 64, 8) for i in range(3)]
    assert admit(wants, {"a": (1000, 1000)}, QuotaPolicy()) == ([0, 1, 2], {})


def test_user_quota_counts_held_and_admitted_tasks_oldest_first() -> None:
    rules = policy(users={"a": Limit("user", "a", max_gpus=2)})
    wants = [Want(1, "a", 1, 1), Want(2, "a", 1, 1), Want(3, "b", 1, 4), Want(4, "a", 1, 0)]
    admitted, waiting = admit(wants, {"a": (1, 1)}, rules)
    # a holds 1 GPU; task 1 takes the second; task 2 would be a third. b has no quota.
    # Task 4 asks for no GPUs, so the GPU limit does not hold it.
    assert admitted == [1, 3, 4]
    assert waiting == {
        2: "over quota: user a may hold at most 2 GPUs at once (2 held, this task asks for 1)"
    }


def test_group_quota_is_shared_by_members() -> None:
    rules = policy(
        groups={"lab": Limit("group", "lab", max_cores=4)},
        members={"lab": {"a", "b"}, "unlimited": {"a"}},
    )
    wants = [Want(1, "b", 2, 0), Want(2, "a", 1, 0), Want(3, "c", 16, 0), Want(4, "b", 1, 0)]
    admitted, waiting = admit(wants, {"a": (1, 0)}, rules)
    # a already holds 1 core of lab's 4: b's 2 and a's 1 fit, c is in no limited group,
    # and b's next core would make 5.
    assert admitted == [1, 2, 3]
    assert waiting == {
        4: "over quota: group lab may hold at most 4 cores at once (4 held, this task asks for 1)"
    }


def test_the_tighter_of_user_and_group_limits_holds() -> None:
    rules = policy(
        users={"a": Limit("user", "a", max_cores=8)},
        groups={"lab": Limit("group", "lab", max_cores=2)},
        members={"lab": {"a"}},
    )
    admitted, waiting = admit([Want(1, "a", 2, 0), Want(2, "a", 1, 0)], {}, rules)
    assert admitted == [1] and "group lab" in waiting[2]
