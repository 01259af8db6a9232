"""S3 (and S3-compatible) object store over boto3.

``S3Store(bucket, prefix)`` keeps key ``k`` at ``<prefix>/k`` in ``bucket``.

* ``put_if_absent`` sends ``If-None-Match: *`` and ``put_if_match`` sends
  ``If-Match: <etag>``; both are decided by the server, atomically, so they
  are correct between any number of processes and machines.  The endpoint
  must support conditional writes (AWS S3 does since 2024; check other
  S3-compatible servers).
* Etags are what the server returns; for single-part uploads on AWS and moto
  that is the MD5 of the bytes, so writing identical bytes again gives the
  same etag.  ``put_if_match`` therefore compares *content*, not write count.
* Metadata is S3 user metadata (``x-amz-meta-*``), including the put-id.
* ``list`` pages through ``ListObjectsV2``; S3 returns keys in UTF-8 byte
  order, which is the store contract's order.
* Objects are written with one ``PutObject`` (no multipart), so an object is at
  most 5 GiB.

Errors are translated here and nowhere else: 404 -> ObjectNotFound
(PreconditionFailed for ``put_if_match``, whose condition failed), 412 ->
PreconditionFailed, 409 (``ConditionalRequestConflict``), throttling, 5xx,
timeouts and connection errors -> Unavailable (retryable), everything else ->
StorageError.  No botocore exception escapes.

botocore's own retries are off by default (``max_attempts=1``) and its
timeouts short, so :class:`~shaledb.storage.wrappers.RetryingStore` decides
about retries and nothing hangs.  Opening the store sends ``HeadBucket`` with
connect and read timeouts of at most ``probe_timeout`` (5 s): a missing
bucket, refused credentials, an unreachable endpoint or one that never
answers fail within seconds with a message naming the bucket and endpoint.  Credentials come from the
standard boto3 chain (environment, profile, instance role); they are never
taken as options, stored, logged or put in messages.  boto3 is imported when
the first S3Store is made, not when ``shaledb.storage`` is.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator, Mapping

from shaledb.errors import InvalidArgument, ObjectNotFound, PreconditionFailed, StorageError, Unavailable
from shaledb.storage.base import (
    PUT_ID_KEY,
    ObjectMeta,
    ObjectStore,
    PutResult,
    check_data,
    check_key,
    check_metadata,
    check_prefix,
    check_range,
)

__all__ = ["S3Store"]

_RETRYABLE_CODES = {
    "ConditionalRequestConflict",
    "OperationAborted",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}

_OPTION_DEFAULTS: dict[str, Any] = {
    "endpoint_url": None,
    "region_name": None,
    "profile_name": None,
    "connect_timeout": 3.0,
    "read_timeout": 30.0,
    "max_attempts": 1,
    "max_pool_connections": 32,
    "addressing_style": None,
    "check_bucket": True,
    "probe_timeout": 5.0,
}


class S3Store(ObjectStore):
    """Objects in an S3 bucket under a key prefix.

    Options (all keyword): ``endpoint_url`` (else ``AWS_ENDPOINT_URL``, else
    AWS), ``region_name``, ``profile_name``, ``connect_timeout`` (3 s),
    ``read_timeout`` (30 s), ``max_attempts`` (botocore attempts per call,
    1 = no botocore retry), ``max_pool_connections`` (32),
    ``addressing_style`` ("path" when an endpoint is given, else "auto"),
    ``check_bucket`` (HeadBucket at open, True), ``probe_timeout`` (5 s:
    connect and read timeout of that HeadBucket, so an endpoint that
    accepts connections but never answers fails the open in seconds).  Thread-safe (one boto3
    client, which is thread-safe).  Picklable: the copy reconnects.
    """

    def __init__(self, bucket: str, prefix: str = "", **options: Any):
        unknown = set(options) - set(_OPTION_DEFAULTS)
        if unknown:
            raise InvalidArgument(
                f"S3Store does not take options {sorted(unknown)} (credentials come from the boto3 chain)"
            )
        if not isinstance(bucket, str) or not bucket:
            raise InvalidArgument(f"S3 bucket name must be a non-empty str, got {bucket!r}")
        if not isinstance(prefix, str):
            raise InvalidArgument(f"S3 prefix must be a str, got {prefix!r}")
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self._root = prefix + "/" if prefix else ""
        opts = dict(_OPTION_DEFAULTS)
        opts.update(options)
        if opts["endpoint_url"] is None:
            opts["endpoint_url"] = os.environ.get("AWS_ENDPOINT_URL") or None
        # what spec() hands to another process: non-default options, with the
        # endpoint resolved here so the other process needs no environment
        self._options = {k: v for k, v in opts.items() if v != _OPTION_DEFAULTS[k]}
        probe = float(opts["probe_timeout"])
        if not probe > 0:
            raise InvalidArgument(f"probe_timeout must be > 0 seconds, got {opts['probe_timeout']!r}")
        self._client = _make_client(opts)
        self.endpoint = self._client.meta.endpoint_url
        if opts["check_bucket"]:
            self._check_bucket(opts, probe)

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix} at {self.endpoint})"

    def __reduce__(self):
        return (_reopen_s3, (self.bucket, self.prefix, dict(self._options)))

    def spec(self) -> tuple[str, dict[str, Any]]:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/"), dict(self._options)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _where(self) -> str:
        return f"bucket {self.bucket!r} at endpoint {self.endpoint}"

    def _check_bucket(self, opts: dict[str, Any], probe: float) -> None:
        """HeadBucket through a short-lived client whose connect and read
        timeouts are at most ``probe`` seconds."""
        import botocore.exceptions as bexc

        popts = dict(opts)
        popts["connect_timeout"] = min(float(opts["connect_timeout"]), probe)
        popts["read_timeout"] = min(float(opts["read_timeout"]), probe)
        popts["max_attempts"] = 1
        client = _make_client(popts)
        try:
            client.head_bucket(Bucket=self.bucket)
        except bexc.ReadTimeoutError:
            self.close()
            raise Unavailable(
                f"S3 endpoint {self.endpoint} accepted the connection but did not answer HeadBucket "
                f"(bucket {self.bucket!r}) within {popts['read_timeout']:g}s; check the endpoint URL "
                "and that the server is healthy"
            ) from None
        except bexc.ClientError as e:
            code, status = _code_status(e)
            self.close()
            if code in _NOT_FOUND_CODES or code == "NoSuchBucket":
                raise StorageError(f"S3 bucket {self.bucket!r} does not exist at endpoint {self.endpoint}") from None
            if code in _DENIED_CODES or code in ("400", "401"):
                raise StorageError(
                    f"access to S3 {self._where()} refused (HTTP {status}); check the credentials and region"
                ) from None
            if status >= 500 or code in _RETRYABLE_CODES:
                raise Unavailable(f"S3 {self._where()} answered HTTP {status} ({code}) to HeadBucket") from None
            raise StorageError(f"HeadBucket on {self._where()} failed: HTTP {status} ({code})") from None
        except bexc.NoCredentialsError:
            self.close()
            raise StorageError(f"no AWS credentials found for {self._where()}") from None
        except (bexc.ConnectionError, bexc.HTTPClientError) as e:
            self.close()
            raise Unavailable(f"cannot reach S3 endpoint {self.endpoint} (bucket {self.bucket!r}): {e}") from None
        except bexc.BotoCoreError as e:
            self.close()
            raise StorageError(f"cannot open S3 {self._where()}: {e}") from None
        finally:
            client.close()

    # -- the one error translation -----------------------------------------

    def _call(self, op: str, key: str, fn, *args, **kwargs):
        import botocore.exceptions as bexc

        if self._client is None:
            raise StorageError(f"{self!r} is closed")
        try:
            return fn(*args, **kwargs)
        except bexc.ClientError as e:
            raise self._translate(op, key, e) from None
        except (bexc.ConnectionError, bexc.HTTPClientError, bexc.ResponseStreamingError, bexc.IncompleteReadError) as e:
            raise Unavailable(f"S3 {op} {key!r} on {self._where()}: {e}") from None
        except bexc.NoCredentialsError:
            raise StorageError(f"no AWS credentials found for {self._where()}") from None
        except bexc.ParamValidationError as e:
            raise InvalidArgument(f"S3 {op} {key!r}: {e}") from None
        except bexc.BotoCoreError as e:
            raise StorageError(f"S3 {op} {key!r} on {self._where()} failed: {e}") from None
        except (ConnectionError, TimeoutError) as e:
            raise Unavailable(f"S3 {op} {key!r} on {self._where()}: {e}") from None

    def _translate(self, op: str, key: str, e) -> Exception:
        code, status = _code_status(e)
        what = f"S3 {op} {key!r} on {self._where()}"
        if code == "NoSuchBucket":
            return StorageError(f"{what}: the bucket does not exist")
        if code in _NOT_FOUND_CODES or status == 404:
            if op == "put_if_match":
                return PreconditionFailed(f"{what}: object does not exist")
            return ObjectNotFound(f"object {key!r} not found in s3://{self.bucket}/{self.prefix}")
        if status == 412 or code == "PreconditionFailed":
            if op == "put_if_absent":
                return PreconditionFailed(f"object {key!r} already exists in s3://{self.bucket}/{self.prefix}")
            return PreconditionFailed(f"{what}: etag does not match")
        if status in (409, 429) or status >= 500 or code in _RETRYABLE_CODES:
            return Unavailable(f"{what}: HTTP {status} ({code}), retryable")
        if code in _DENIED_CODES:
            return StorageError(f"{what}: access denied (HTTP {status}); check the credentials")
        return StorageError(f"{what}: HTTP {status} ({code})")

    # -- reads -------------------------------------------------------------

    def _k(self, key: str) -> str:
        return self._root + check_key(key)

    def get(self, key: str) -> bytes:
        k = self._k(key)

        def run():
            return self._client.get_object(Bucket=self.bucket, Key=k)["Body"].read()

        return self._call("get", key, run)

    def get_range(self, key: str, start: int, end: int | None) -> bytes:
        k = self._k(key)
        start, end = check_range(start, end)
        if end == start:
            self.head(key)  # existence check; the range itself is empty
            return b""
        rng = f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"

        def run():
            import botocore.exceptions as bexc

            try:
                r = self._client.get_object(Bucket=self.bucket, Key=k, Range=rng)
            except bexc.ClientError as e:
                code, status = _code_status(e)
                if status == 416 or code == "InvalidRange":
                    return b""  # the object exists (else 404) but start >= size
                raise
            data = r["Body"].read()
            if not r.get("ContentRange"):  # a server that ignored Range sent it all
                data = data[start:end]
            return data

        return self._call("get_range", key, run)

    def head(self, key: str) -> ObjectMeta:
        k = self._k(key)
        r = self._call("head", key, self._client.head_object, Bucket=self.bucket, Key=k)
        return ObjectMeta(
            key, int(r["ContentLength"]), r["ETag"], r["LastModified"].timestamp(), dict(r.get("Metadata") or {})
        )

    # -- writes ------------------------------------------------------------

    def _put(self, op: str, key: str, data, metadata, put_id, **cond) -> PutResult:
        k = self._k(key)
        view = check_data(data)
        meta = check_metadata(metadata, put_id)
        body = data if isinstance(data, bytes) else view.tobytes()
        r = self._call(op, key, self._client.put_object, Bucket=self.bucket, Key=k, Body=body, Metadata=meta, **cond)
        return PutResult(r["ETag"], meta[PUT_ID_KEY])

    def put(self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None) -> PutResult:
        return self._put("put", key, data, metadata, put_id)

    def put_if_absent(
        self, key: str, data, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        return self._put("put_if_absent", key, data, metadata, put_id, IfNoneMatch="*")

    def put_if_match(
        self, key: str, data, etag: str, metadata: Mapping[str, str] | None = None, *, put_id: str | None = None
    ) -> PutResult:
        if not isinstance(etag, str) or not etag:
            raise InvalidArgument(f"etag must be a non-empty str, got {etag!r}")
        return self._put("put_if_match", key, data, metadata, put_id, IfMatch=etag)

    def delete(self, key: str) -> None:
        k = self._k(key)
        self._call("delete", key, self._client.delete_object, Bucket=self.bucket, Key=k)

    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        check_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectMeta]:
        cut = len(self._root)
        token = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": self._root + prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", prefix, self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", ()):
                yield ObjectMeta(
                    item["Key"][cut:], int(item["Size"]), item["ETag"], item["LastModified"].timestamp(), None
                )
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]


def _code_status(e) -> tuple[str, int]:
    err = e.response.get("Error", {}) or {}
    code = str(err.get("Code", ""))
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if not status and code.isdigit():
        status = int(code)
    return code, status


_sessions: dict[tuple, Any] = {}
_sessions_lock = threading.Lock()


def _make_client(opts: dict[str, Any]):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InvalidArgument("S3 stores need boto3: pip install 'shaledb[s3]'") from None
    style = opts["addressing_style"] or ("path" if opts["endpoint_url"] else "auto")
    config = Config(
        connect_timeout=opts["connect_timeout"],
        read_timeout=opts["read_timeout"],
        retries={"total_max_attempts": int(opts["max_attempts"]), "mode": "standard"},
        max_pool_connections=int(opts["max_pool_connections"]),
        s3={"addressing_style": style},
    )
    try:
        with _sessions_lock:
            # a boto3 Session caches the service model, so the second client
            # of a session costs ~15 ms instead of ~250 ms; making a client is
            # not thread-safe, hence the lock
            skey = (opts["profile_name"], opts["region_name"], os.getpid())
            session = _sessions.get(skey)
            if session is None:
                session = _sessions[skey] = boto3.session.Session(
                    profile_name=opts["profile_name"], region_name=opts["region_name"]
                )
            return session.client("s3", endpoint_url=opts["endpoint_url"], config=config)
    except ValueError as e:  # bad endpoint url
        raise InvalidArgument(f"cannot make an S3 client: {e}") from None
    except Exception as e:  # botocore ProfileNotFound and friends
        raise StorageError(f"cannot make an S3 client: {e}") from None


def _reopen_s3(bucket: str, prefix: str, options: dict[str, Any]) -> S3Store:
    return S3Store(bucket, prefix, **options)
