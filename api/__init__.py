"""The HTTP process: a Flask app that enqueues catalogued tasks (imports workqueue/ only)."""
