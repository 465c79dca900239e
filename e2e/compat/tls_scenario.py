#!/usr/bin/env python3
"""HTTPS as boto3 and the AWS CLI meet it, against a broker run with --tls-listen
(scripts/e2e-compat):

    python tls_scenario.py certs DIR      # a CA (ca.crt) and the broker's tls.crt / tls.key
    python tls_scenario.py check --endpoint https://127.0.0.1:4443 --dir DIR

With the CA bundle, boto3 and the AWS CLI are served (signed, as the broker requires);
trusting another CA, or without the bundle, they refuse the broker's certificate. The
certificate files are then rotated under the running broker: to an expired certificate,
which boto3 refuses within seconds, and to a renewed one, which is served. Prints, last,
"N passed, M failed".
"""

import argparse
import datetime
import os
import ssl
import subprocess
import sys
import time
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import SSLError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from checks import check, summary

ACCESS_KEY = "AKIDSTREAMFABRICTEST"
SECRET_KEY = "streamfabric-test-secret"
DAY = datetime.timedelta(days=1)

def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - DAY).not_valid_after(now + 30 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def server_cert(ca, ca_key, not_before, not_after, dns_names=("localhost",), ips=("127.0.0.1",)):
    """A certificate for dns_names and ips, signed by ca: (cert PEM, key PEM)."""
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), pem(key)


def install(directory, cert_pem, key_pem):
    """Written aside and renamed, as a Secret volume swaps its files."""
    for name, data in (("tls.crt", cert_pem), ("tls.key", key_pem)):
        tmp = os.path.join(directory, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(directory, name))


def read(path):
    with open(path, "rb") as f:
        return f.read()


def make_certs(directory):
    os.makedirs(directory, exist_ok=True)
    ca, ca_key = make_ca("streamfabric e2e CA")
    with open(os.path.join(directory, "ca.crt"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "ca.key"), "wb") as f:
        f.write(pem(ca_key))
    other, _ = make_ca("another CA")
    with open(os.path.join(directory, "other-ca.crt"), "wb") as f:
        f.write(other.public_bytes(serialization.Encoding.PEM))
    now = datetime.datetime.now(datetime.timezone.utc)
    install(directory, *server_cert(ca, ca_key, now - DAY, now + 7 * DAY))


def client(endpoint, verify):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1", verify=verify,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5))


def ssl_error(call):
    try:
        call()
        return None
    except SSLError as e:
        return str(e)


def served_certificate(endpoint):
    host, port = endpoint.removeprefix("https://").rsplit(":", 1)
    return ssl.get_server_certificate((host, int(port)))


def check_tls(endpoint, directory):
    ca_file = os.path.join(directory, "ca.crt")
    k = client(endpoint, ca_file)
    stream = f"tls-{uuid.uuid4().hex[:6]}"
    k.create_stream(StreamName=stream, ShardCount=1)
    k.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    put = k.put_record(StreamName=stream, PartitionKey="k", Data=b"over tls")
    it = k.get_shard_iterator(StreamName=stream, ShardId=put["ShardId"],
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = k.get_records(ShardIterator=it)["Records"]
    check("boto3 with the CA bundle: put and read back over HTTPS", [r["Data"] for r in records] == [b"over tls"])

    error = ssl_error(lambda: client(endpoint, os.path.join(directory, "other-ca.crt")).list_streams())
    check("boto3 trusting another CA refuses the certificate",
          error is not None and "CERTIFICATE_VERIFY_FAILED" in error, error)
    error = ssl_error(lambda: client(endpoint, None).list_streams())
    check("boto3 without the bundle (its default CAs) refuses it", error is not None, error)

    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
               AWS_MAX_ATTEMPTS="1")
    def cli(*extra):
        return subprocess.run(["aws", "kinesis", "describe-stream-summary", "--stream-name", stream,
                               "--endpoint-url", endpoint, *extra], env=env, capture_output=True, text=True,
                              timeout=60)
    done = cli("--ca-bundle", ca_file)
    check("the AWS CLI with --ca-bundle", done.returncode == 0 and stream in done.stdout, done.stderr[-300:])
    done = cli()
    check("the AWS CLI without it refuses the certificate",
          done.returncode != 0 and "SSL" in done.stderr, done.stderr[-300:])

    # Rotation under the running broker: an expired certificate first.
    ca = x509.load_pem_x509_certificate(read(ca_file))
    ca_key = serialization.load_pem_private_key(read(os.path.join(directory, "ca.key")), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = server_cert(ca, ca_key, now - 10 * DAY, now - DAY)
    install(directory, *expired)
    deadline, error = time.monotonic() + 15, None
    while time.monotonic() < deadline and error is None:
        # A new client: a pooled connection keeps the certificate of its handshake.
        error = ssl_error(lambda: client(endpoint, ca_file).list_streams())
        time.sleep(0.5)
    check("an expired certificate, rotated in, is refused by boto3 within 15 s",
          error is not None and "expired" in error, error)
    renewed = server_cert(ca, ca_key, now - DAY, now + 7 * DAY)
    install(directory, *renewed)
    deadline, served = time.monotonic() + 15, None
    while time.monotonic() < deadline:
        served = served_certificate(endpoint).encode()
        if x509.load_pem_x509_certificate(served) == x509.load_pem_x509_certificate(renewed[0]):
            break
        time.sleep(0.5)
    check("a renewed certificate, rotated in, is served within 15 s (no restart)",
          x509.load_pem_x509_certificate(served) == x509.load_pem_x509_certificate(renewed[0]))
    check("boto3 is served again", ssl_error(lambda: client(endpoint, ca_file).list_streams()) is None)
    k.delete_stream(StreamName=stream)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    certs = sub.add_parser("certs")
    certs.add_argument("dir")
    run = sub.add_parser("check")
    run.add_argument("--endpoint", required=True)
    run.add_argument("--dir", required=True)
    args = p.parse_args()
    if args.command == "certs":
        make_certs(args.dir)
        return 0
    check_tls(args.endpoint, args.dir)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
