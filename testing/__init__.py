"""Private RabbitMQ/Redis servers and project processes, shared by tests/ and bench/."""
