"""Two brokers race for the same lease through a real S3-compatible store (MinIO), in phases:

  setup: create a 1-shard stream on broker A and wait until its description is in the bucket
         (so that broker B, started next on an empty data directory, restores it from there).
  race:  for each round, a fresh application: CreateLeases on A, then TakeLease of the same
         shard with ExpectedLeaseCounter 0 on A (worker-a) and on B (worker-b) at the same
         moment. Exactly one must win; the other must get LeaseConflictException; the lease in
         the bucket must name the winner with counter 1, and both brokers must list it so.

Ends with `N passed, M failed`; exits non-zero on any failure.
"""
import time

from two_brokers import arguments, at_once, call, check, create_and_mirror, finish, read_json, s3

TARGET = "StreamfabricLeases_20261129."
SHARD = "shardId-000000000000"


def lease_op(endpoint, op, body):
    return call(endpoint, TARGET + op, body)


def race(args):
    bucket = s3(args)
    wins = {"worker-a": 0, "worker-b": 0}
    started = time.time()
    for n in range(args.rounds):
        app = f"race-{n}"
        status, answer = lease_op(args.a, "CreateLeases", {"ApplicationName": app, "StreamName": args.stream})
        if not check(f"round {n}: CreateLeases", status == 200 and answer.get("Created") == [SHARD], answer):
            continue

        def take(worker, endpoint):
            body = {"ApplicationName": app, "StreamName": args.stream, "ShardId": SHARD,
                    "WorkerId": worker, "ExpectedLeaseCounter": 0}
            return lambda: lease_op(endpoint, "TakeLease", body)

        results = at_once(**{"worker-a": take("worker-a", args.a), "worker-b": take("worker-b", args.b)})
        winners = [w for w, (status, _) in results.items() if status == 200]
        losers = [w for w, (status, answer) in results.items()
                  if status == 400 and answer.get("__type") == "LeaseConflictException"]
        if not check(f"round {n}: exactly one winner, the other a LeaseConflictException",
                     len(winners) == 1 and len(losers) == 1, results):
            continue
        winner = winners[0]
        wins[winner] += 1
        stored = read_json(bucket, args, f"consumers/{app}/leases/{SHARD}.json")
        check(f"round {n}: the bucket names the winner",
              stored.get("LeaseOwner") == winner and stored.get("LeaseCounter") == 1, stored)
        for name, endpoint in (("A", args.a), ("B", args.b)):
            status, answer = lease_op(endpoint, "ListLeases", {"ApplicationName": app, "StreamName": args.stream})
            owners = [lease.get("LeaseOwner") for lease in answer.get("Leases", [])]
            check(f"round {n}: broker {name} lists the winner", status == 200 and owners == [winner], answer)
    print(f"lease race: {args.rounds} rounds in {time.time() - started:.1f}s; wins {wins}")


if __name__ == "__main__":
    args = arguments("lease-race", lambda p: p.add_argument("--rounds", type=int, default=50))
    create_and_mirror(args, 1) if args.phase == "setup" else race(args)
    finish()
