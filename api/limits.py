"""Limits of the HTTP contract, shared by the views that enforce them and the document that states them."""

MAX_BODY_BYTES = 256 * 1024
MAX_WAIT_SECONDS = 30  # GET /tasks/<id>?wait=
MAX_EVENTS_SECONDS = 300  # GET /tasks/<id>/events?timeout=
# A quiet event stream sends a comment this often: a client that went away is noticed within two.
EVENTS_KEEPALIVE_SECONDS = 2.0
DEFAULT_LIMIT, MAX_LIMIT = 50, 500  # GET /tasks?limit=
LISTED_STATES = ("PENDING", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
