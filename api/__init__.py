"""HTTP side of workqueue: a Flask app that enqueues catalogued tasks."""
