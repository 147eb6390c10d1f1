"""Command-line clients: submit_tasks.py (the book's script) and the wait init step."""
