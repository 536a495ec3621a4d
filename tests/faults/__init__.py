"""The fault-injection suite: killed processes, Redis faults and races, each
checked against a ledger the jobs write themselves (harness.py).

Every scenario of issue 10 and the tests that hold it: scenario [executors]
then file, then test(s). "both": the test runs on both executors
(DRAIN_EXECUTOR lean and rq).

- SIGKILL of a drain, at each step (claimed, mid-job, after end) [both]
    test_killed_drain.py
        test_a_drain_killed_at_each_step_is_recovered_by_the_next_drain
- SIGKILL of a queue child (a drain's worker) [both]
    test_killed_workers.py
        test_a_killed_queue_worker_fails_its_job_per_retry_and_the_drain_goes_on
- SIGKILL of an always-on worker [both]
    test_killed_workers.py
        test_a_killed_always_on_worker_is_recovered_by_its_supervisor
- SIGKILL of a supervisor (item 4; recovered by a new supervisor on lean, by
  the next drain on rq) [both]
    test_killed_workers.py
        test_a_killed_supervisor_leaves_no_job_started
- Redis stopped 3 s and 8 s mid-drain (item 3) [3 s lean, 8 s rq]
    test_redis_faults.py
        test_after_a_redis_outage_mid_drain_no_job_is_stranded
- client connections killed [both]
    test_redis_faults.py
        test_connections_cut_mid_drain_lose_no_job_and_run_none_twice
- quota errors mid-drain (item 3; on lean a job ran twice, found by this suite)
  [both]
    test_redis_faults.py
        test_quota_errors_mid_drain_open_an_incident_and_lose_no_job
- two promoters racing (item 1): two supervisors [both]
    test_races.py
        test_two_supervisors_promoting_at_the_same_instant_run_each_job_once
- two promoters racing (item 1): a supervisor and a drain [both]
    test_races.py
        test_a_supervisor_and_a_drain_promoting_at_the_same_instant_run_each_job_once
- two drains released together [both]
    test_races.py
        test_two_drains_released_together_run_one_and_skip_the_other
- a drain with a skewed clock (item 2) [both]
    test_lease.py
        test_a_drain_on_a_host_with_a_fast_clock_does_not_take_a_running_drains_lease
- a slow on_failure after the hard deadline (item 2) [both]
    test_lease.py
        test_a_slow_failure_callback_after_the_hard_deadline_keeps_the_lease
- a lost lease noticed by its holder (item 2) [both]
    test_lease.py
        test_a_drain_that_lost_its_lease_stops_and_keeps_the_takers_verdict
- a queue only RQ clients know (item 5) [both]
    test_queue_safety.py
        test_a_queue_only_clients_know_blocks_the_switch_until_registered_and_drained
- a forked helper outliving its job (item 6) [both]
    test_queue_safety.py
        test_a_helper_outliving_its_job_does_not_hold_the_drain_command
        test_a_helper_outliving_its_job_does_not_hold_a_spawning_drain
- stopping a running job (item 7) [both]
    test_queue_safety.py
        test_the_consoles_stop_ends_a_running_job_as_stopped
        test_a_job_that_swallows_the_stop_still_ends_stopped_once
- a dependent on another queue (item 8) [both]
    test_queue_safety.py
        test_dependents_on_other_queues_run_in_the_same_drain
"""
