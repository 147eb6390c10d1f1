"""Settings: the documented environment names, defaults, and one-line errors."""

import dataclasses
import re
import subprocess
import sys

import pytest

from workqueue import settings as settings_module
from workqueue.settings import Settings, SettingsError


def test_broker_url_is_built_from_the_books_rabbitmq_variables():
    settings = Settings.from_env(
        {"RABBITMQ_HOST": "mq", "RABBITMQ_PORT": "5673", "RABBITMQ_USERNAME": "user", "RABBITMQ_PASSWORD": "p@ss/:w"}
    )
    # Password and the default vhost "/" are percent-encoded.
    assert settings.broker_url == "amqp://user:p%40ss%2F%3Aw@mq:5673/%2F"


def test_defaults_point_at_the_kubernetes_service_names():
    settings = Settings.from_env({})
    assert settings.broker_url.endswith("@message-queue:5672/%2F")
    assert settings.result_backend == "redis://redis:6379/0"
    assert settings.worker_debug_level == "info"
    assert settings.port == 8000
    assert settings.worker_prefetch_multiplier == 1


def test_broker_url_wins_over_rabbitmq_variables():
    settings = Settings.from_env({"BROKER_URL": "amqp://a:b@elsewhere:1//", "RABBITMQ_HOST": "ignored"})
    assert settings.broker_url == "amqp://a:b@elsewhere:1//"


def test_redis_password_goes_into_the_result_backend_url():
    settings = Settings.from_env({"REDIS_HOST": "r", "REDIS_PASSWORD": "s3cr:t", "REDIS_DB": "2"})
    assert settings.result_backend == "redis://:s3cr%3At@r:6379/2"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RABBITMQ_PORT": "abc"}, "RABBITMQ_PORT must be an integer (got 'abc')"),
        ({"RABBITMQ_PORT": "70000"}, "RABBITMQ_PORT must be >= 1 and <= 65535 (got 70000)"),
        ({"WORKER_DEBUG_LEVEL": "loud"}, "WORKER_DEBUG_LEVEL must be one of"),
        ({"QUEUE_TYPE": "stream"}, "QUEUE_TYPE must be one of classic, quorum"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be >= 1"),
        ({"BROKER_URL": "http://x"}, "BROKER_URL must start with one of"),
        ({"RESULT_BACKEND": "rpc://"}, "RESULT_BACKEND must start with one of"),
        (
            {"TASK_SOFT_TIME_LIMIT": "700", "TASK_TIME_LIMIT": "600"},
            "TASK_SOFT_TIME_LIMIT must be below TASK_TIME_LIMIT",
        ),
        ({"WORKER_SHUTDOWN_TIMEOUT": "-1"}, "WORKER_SHUTDOWN_TIMEOUT must be >= 0"),
        ({"TASK_TRACK_STARTED": "maybe"}, "TASK_TRACK_STARTED must be true or false"),
    ],
)
def test_malformed_values_name_the_variable(env, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_settings_check_prints_one_line_and_exits_2():
    result = subprocess.run(
        [sys.executable, "-m", "workqueue.settings"],
        env={"RABBITMQ_PORT": "five", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr == "configuration error: RABBITMQ_PORT must be an integer (got 'five')\n"


def test_run_sh_refuses_to_start_on_bad_configuration():
    result = subprocess.run(
        ["./run.sh", "worker"],
        env={"WORKER_CONCURRENCY": "many", "PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: WORKER_CONCURRENCY must be an integer (got 'many')"


def test_run_sh_gets_its_values_from_the_settings_module():
    result = subprocess.run(
        [sys.executable, "-m", "workqueue.settings", "--shell"],
        env={"RUNTIME_DIR": "/tmp/a dir", "RABBITMQ_PASSWORD": "secret", "TASK_MODULES": "a.b, c", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "RUNTIME_DIR='/tmp/a dir'" in lines
    assert "WORKER_DEBUG_LEVEL=info" in lines and "TASK_TRACK_STARTED=true" in lines
    assert "TASK_MODULES=a.b,c" in lines
    assert "secret" not in result.stdout, "URLs and passwords are never printed"


def test_every_variable_has_one_default_in_the_settings_module():
    defaults = settings_module.defaults()
    assert defaults["RUNTIME_DIR"] == Settings.from_env({}).runtime_dir == "/tmp/workqueue"
    assert defaults["RABBITMQ_HOST"] == "message-queue" and defaults["REDIS_PORT"] == 6379
    # Every field but the two URLs is read from exactly one variable; the URLs' parts have theirs.
    parts = len(settings_module.BROKER_PARTS) + len(settings_module.BACKEND_PARTS)
    assert len(defaults) == len(dataclasses.fields(Settings)) - 2 + parts


GOOD_TOKEN = "0123456789abcdef-token"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"API_TOKENS": "short"}, "API_TOKENS: token 1 of 1 has 5 characters, fewer than 16"),
        ({"API_TOKENS": f"{GOOD_TOKEN}, also-short"}, "API_TOKENS: token 2 of 2 has 10 characters"),
        ({"API_READ_TOKENS": "0123456789abcdef<>"}, "API_READ_TOKENS: token 1 of 1 has a character other than"),
        ({"API_TOKENS": GOOD_TOKEN, "API_READ_TOKENS": GOOD_TOKEN}, "a token is in both API_TOKENS and API_READ"),
        ({"API_AUTH": "off", "API_TOKENS": GOOD_TOKEN}, "API_AUTH is off but API_TOKENS or API_READ_TOKENS is set"),
        ({"API_AUTH": "maybe"}, "API_AUTH must be one of required, off"),
    ],
)
def test_malformed_tokens_are_refused_without_showing_them(env, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not any(token in str(caught.value) for token in ("short", "also-short", "<>", GOOD_TOKEN))


def test_blank_token_entries_are_ignored_and_auth_is_on_by_default():
    settings = Settings.from_env({"API_TOKENS": f" ,{GOOD_TOKEN}, ,", "API_READ_TOKENS": " "})
    assert settings.api_auth == "required"
    assert settings.api_tokens == (GOOD_TOKEN,) and settings.api_read_tokens == ()
    assert settings.check_api_access() is settings
    read_only = Settings.from_env({"API_READ_TOKENS": GOOD_TOKEN})
    assert read_only.check_api_access() is read_only, "a read-only token is a usable token"
    with pytest.raises(SettingsError, match="^API_AUTH is required but API_TOKENS and API_READ_TOKENS hold no token"):
        Settings.from_env({"API_TOKENS": ", ,"}).check_api_access()
    assert Settings.from_env({"API_AUTH": "off"}).check_api_access().api_auth == "off"


@pytest.mark.parametrize("tokens", [",", " ", ""])
def test_run_sh_api_refuses_to_start_open_by_accident(tokens):
    result = subprocess.run(
        ["./run.sh", "api"],
        env={"API_TOKENS": tokens, "PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "configuration error: API_AUTH is required but API_TOKENS and API_READ_TOKENS hold no token: "
        "give the API a token (from a Secret), or set API_AUTH=off for an open API"
    ]


def test_only_the_api_needs_a_token():
    """A worker or a CLI has no token in the chart: only run.sh api checks for one."""
    env = {"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "RUNTIME_DIR": "/tmp/workqueue-settings-test"}
    assert subprocess.run([sys.executable, "-m", "workqueue.settings"], env=env, timeout=60).returncode == 0
    api = subprocess.run(
        [sys.executable, "-m", "workqueue.settings", "--api"], env=env, capture_output=True, timeout=60
    )
    assert api.returncode == 2


def test_several_rabbitmq_hosts_make_a_failover_url_and_tls_switches_the_scheme():
    settings = Settings.from_env(
        {"RABBITMQ_HOST": "rabbit-0,rabbit-1:5673", "RABBITMQ_PASSWORD": "p@ss", "RABBITMQ_TLS": "true",
         "RABBITMQ_PORT": "5671"}
    )  # fmt: skip
    assert settings.broker_urls == (
        "amqps://guest:p%40ss@rabbit-0:5671/%2F",
        "amqps://guest:p%40ss@rabbit-1:5673/%2F",
    )
    assert settings.broker_tls


def test_sentinels_make_a_sentinel_result_backend():
    settings = Settings.from_env({"REDIS_SENTINELS": "s0:26379, s1", "REDIS_PASSWORD": "pw", "REDIS_DB": "2"})
    assert settings.result_backend == "sentinel://:pw@s0:26379/2;sentinel://:pw@s1:26379/2"
    assert settings.result_backend_sentinel and settings.redis_sentinel_master == "mymaster"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"REDIS_TLS_CA_FILE": "/nowhere/ca.pem"}, "REDIS_TLS_CA_FILE names '/nowhere/ca.pem', which is not"),
        ({"RABBITMQ_TLS_CERT_FILE": __file__}, "RABBITMQ_TLS_CERT_FILE and RABBITMQ_TLS_KEY_FILE go together"),
        ({"BROKER_URL": "amqp://a//;redis://b"}, "BROKER_URL must start with one of"),
    ],
)
def test_tls_files_and_failover_urls_are_checked_with_one_line(environ, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(environ)
