"""The fault-injection suite: killed processes, Redis faults and races, each
checked against a ledger the jobs write themselves (harness.py)."""
