import shaledb
import shaledb.errors as errors


def test_errors_share_one_root():
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), shaledb.ShaleDBError)


def test_invalid_argument_is_a_value_error():
    assert issubclass(shaledb.InvalidArgument, ValueError)


def test_moto_server_answers(moto_server, s3_bucket):
    client = moto_server.client()
    client.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    assert client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"v"
