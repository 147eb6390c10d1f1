"""TLS options for py-amqp and redis-py, built from the settings; the start-up check when nothing is to check."""

from __future__ import annotations

import dataclasses
import ssl

import pytest

from workqueue import tls
from workqueue.settings import SettingsError


@pytest.fixture
def pem_files(tmp_path):
    names = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("not read here: only named")
        names[name] = str(path)
    return names


def test_the_server_certificate_is_always_verified_against_the_system_cas_by_default(settings):
    assert tls.amqp_options(settings) == {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": None, "server_hostname": None}
    assert tls.redis_options(settings) == {
        "ssl_cert_reqs": "required", "ssl_ca_certs": None, "ssl_check_hostname": True,
    }  # fmt: skip


def test_a_ca_a_client_certificate_and_no_hostname_check_are_passed_in_each_librarys_names(settings, pem_files):
    configured = dataclasses.replace(
        settings,
        rabbitmq_tls_ca_file=pem_files["ca"], rabbitmq_tls_cert_file=pem_files["cert"],
        rabbitmq_tls_key_file=pem_files["key"], rabbitmq_tls_verify_hostname=False,
        redis_tls_ca_file=pem_files["ca"], redis_tls_cert_file=pem_files["cert"],
        redis_tls_key_file=pem_files["key"], redis_tls_verify_hostname=False,
    ).validated()  # fmt: skip
    assert tls.amqp_options(configured) == {
        "cert_reqs": ssl.CERT_REQUIRED, "ca_certs": pem_files["ca"],
        "certfile": pem_files["cert"], "keyfile": pem_files["key"],
    }  # fmt: skip
    assert tls.redis_options(configured) == {
        "ssl_cert_reqs": "required", "ssl_ca_certs": pem_files["ca"], "ssl_check_hostname": False,
        "ssl_certfile": pem_files["cert"], "ssl_keyfile": pem_files["key"],
    }  # fmt: skip


def test_a_certificate_without_its_key_is_refused_in_one_line(settings, pem_files):
    with pytest.raises(SettingsError, match="^RABBITMQ_TLS_CERT_FILE and RABBITMQ_TLS_KEY_FILE go together"):
        dataclasses.replace(settings, rabbitmq_tls_cert_file=pem_files["cert"]).validated()
    with pytest.raises(SettingsError, match="^REDIS_TLS_CA_FILE names '/nowhere.pem', which is not a readable file"):
        dataclasses.replace(settings, redis_tls_ca_file="/nowhere.pem").validated()


def test_nothing_is_checked_without_tls(settings):
    assert not settings.broker_tls and not settings.result_backend_tls
    assert tls.check(settings) is None


def test_a_tls_server_that_does_not_answer_yet_is_left_to_the_processes_retries(settings):
    unanswered = dataclasses.replace(
        settings, broker_url="amqps://guest:guest@127.0.0.1:9//", result_backend="rediss://127.0.0.1:9/0"
    )
    assert unanswered.broker_tls and unanswered.result_backend_tls
    assert tls.check(unanswered) is None
