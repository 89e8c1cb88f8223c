"""The one URI redactor (:mod:`cluster.storage.redact`): secrets in URIs anywhere in a text are masked,
everything else stays as it was; the old names (``cluster.storage.uri.redact``, ``jobs.tracking.uri.redact``)
are the same function."""

from __future__ import annotations

import pytest

from cluster.storage.redact import MASK, is_redacted, is_secret_param, redact, strip_userinfo


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # user-info: the password (or a lone token) is masked, the user name kept
        ("http://user:pw@host:5000/x", "http://user:***@host:5000/x"),
        ("https://ghp_abcdef@github.example/x", "https://***@github.example/x"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        # secret-looking query parameters keep their name, lose their value
        ("http://user:pw@host:5000/x?api_key=1", "http://user:***@host:5000/x?api_key=***"),
        ("http://h/x?token=abc&page=2", "http://h/x?token=***&page=2"),
        (
            "http://h/x?access_token=abc&key=k&secret=s&password=p",
            "http://h/x?access_token=***&key=***&secret=***&password=***",
        ),
        (
            "https://acct.blob.example/c/b?sv=2020&sig=AbC%2Bd&se=2030",
            "https://acct.blob.example/c/b?sv=2020&sig=***&se=2030",
        ),
        ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=***&state=1"),
        # s3:// and postgresql://
        (
            "s3://bkt/k?X-Amz-Signature=ff00&X-Amz-Credential=AK%2Fx&X-Amz-Security-Token=t&part=2",
            "s3://bkt/k?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Security-Token=***&part=2",
        ),
        ("s3://AKIAXXX:topsecret@bkt/runs", "s3://AKIAXXX:***@bkt/runs"),
        ("postgresql://mlflow:pa@ss@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        (
            "postgresql://db/mlflow?user=u&password=pw&sslmode=require",
            "postgresql://db/mlflow?user=u&password=***&sslmode=require",
        ),
        # URIs without secrets are unchanged, byte for byte
        (
            "s3://bkt/runs?endpoint_override=127.0.0.1:9000&scheme=http",
            "s3://bkt/runs?endpoint_override=127.0.0.1:9000&scheme=http",
        ),
        (
            "s3://bkt/runs?role_arn=arn:aws:iam::1:role/r&session_name=qtrust",
            "s3://bkt/runs?role_arn=arn:aws:iam::1:role/r&session_name=qtrust",
        ),
        ("postgresql://db:5432/mlflow", "postgresql://db:5432/mlflow"),
        ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
        # the MLflow UI link qtrust prints names a shared view, not a secret
        (
            "http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=0f3a9c",
            "http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=0f3a9c",
        ),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("/data/runs/sweep-1", "/data/runs/sweep-1"),
    ],
)
def test_a_uri_loses_its_secrets_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


def test_a_uri_inside_a_sentence() -> None:
    text = "cannot reach http://alice:s3cret@mlflow.example:5000/api?token=t0k (HTTPError 401); mail a@b.c"
    assert redact(text) == "cannot reach http://alice:***@mlflow.example:5000/api?token=*** (HTTPError 401); mail a@b.c"


def test_several_uris_in_one_text() -> None:
    text = (
        "copied s3://bkt/a?X-Amz-Signature=sig1 to gs://other/b?token=tok2, "
        "logged at postgresql://u:pw3@db/x and 'https://tok4@git.example/r.git'; plain s3://bkt/c kept"
    )
    out = redact(text)
    for secret in ("sig1", "tok2", "pw3", "tok4"):
        assert secret not in out
    assert out == (
        "copied s3://bkt/a?X-Amz-Signature=*** to gs://other/b?token=***, "
        "logged at postgresql://u:***@db/x and 'https://***@git.example/r.git'; plain s3://bkt/c kept"
    )


def test_text_without_secrets_is_unchanged() -> None:
    for text in ("", "no uri here", "a=b c@d", "qtrust run sweep.yaml --storage-root s3://bkt/runs"):
        assert redact(text) == text


def test_secret_parameter_names() -> None:
    for name in (
        "api_key",
        "KEY",
        "token",
        "access_token",
        "secret",
        "password",
        "signature",
        "sig",
        "X-Amz-Credential",
    ):
        assert is_secret_param(name), name
    for name in ("endpoint_override", "scheme", "region", "session_name", "allow_delayed_open", "part"):
        assert not is_secret_param(name), name


def test_helpers() -> None:
    assert strip_userinfo("http://u:p@host:5/x") == "http://host:5/x"
    assert is_redacted(f"http://u:{MASK}@h") and is_redacted(f"s3://b/k?token={MASK}")
    assert not is_redacted("http://u:p@h") and not is_redacted(f"http://h/{MASK}")


def test_every_old_name_is_the_one_redactor() -> None:
    import cluster.storage.uri as storage_uri
    import jobs.tracking.uri as tracking_uri

    assert storage_uri.redact is redact and tracking_uri.redact is redact
    assert tracking_uri.is_redacted is is_redacted
    # the case the two used to disagree on: the storage one kept ``api_key``
    assert storage_uri.redact("http://user:pw@host:5000/x?api_key=1") == "http://user:***@host:5000/x?api_key=***"


def test_spec_problems_quote_inputs_redacted() -> None:
    """``pydantic_problems`` (jobs/spec/schema.py) quotes inputs through ``cluster.storage.uri.redact``."""
    from pydantic import BaseModel, ValidationError

    from jobs.spec.schema import pydantic_problems

    class Model(BaseModel):
        port: int

    with pytest.raises(ValidationError) as caught:
        Model(port="see http://u:pw9@h/x?api_key=k9 now")
    problems = " ".join(pydantic_problems(caught.value))
    assert "pw9" not in problems and "k9" not in problems
