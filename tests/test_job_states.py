"""The job engine's status mapping tolerates the spellings real servers use."""

import pytest

from tap_backstory.jobs import job_state


@pytest.mark.parametrize(
    ("sent", "meant"),
    [("Queued", "Queued"), ("RUNNING", "Running"), ("completed", "Completed"), ("Failed", "Failed"),
     ("Canceled", "Canceled"), ("Cancelled", "Canceled"), ("Archived", "Archived"), (None, None)],
)
def test_job_states_are_read_case_insensitively(sent, meant):
    assert job_state({"state": sent}) == meant
