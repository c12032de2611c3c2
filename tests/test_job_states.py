"""The job engine's status mapping tolerates the spellings real servers use."""

import pytest

from tap_backstory.client import ApiError
from tap_backstory.jobs import _is_temporary, job_state


@pytest.mark.parametrize(
    ("sent", "meant"),
    [("Queued", "Queued"), ("RUNNING", "Running"), ("completed", "Completed"), ("Failed", "Failed"),
     ("Canceled", "Canceled"), ("Cancelled", "Canceled"), ("Archived", "Archived"), (None, None)],
)
def test_job_states_are_read_case_insensitively(sent, meant):
    assert job_state({"state": sent}) == meant


@pytest.mark.parametrize(
    ("status", "message", "temporary"),
    [
        (429, "TooManyRequestsException: Too many jobs", True),
        (503, "ServiceUnavailableException: try later", True),
        (400, "TooManyJobsException: the organization already runs 2 jobs", True),
        (400, "BadRequestException: Maximum number of queued jobs reached", True),
        (400, "BadRequestException: Invalid parameter format: exportType", False),
        (400, "BadRequestException: date range exceeds the limit of 14 days", False),
        (403, "ForbiddenException: key not allowed", False),
    ],
)
def test_job_limit_refusals_are_waited_out_and_bad_requests_are_not(status, message, temporary):
    where = "Backstory (Activity key) POST /pull/v1/export/activities/jobs"
    error = ApiError(f"{where} answered {status}: {message}", status)
    assert _is_temporary(error) is temporary
