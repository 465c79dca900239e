"""Two brokers race for the same shard manifests in a real S3-compatible store (MinIO), in phases:

  setup: create a stream of N shards on broker A and wait until its description is in the
         bucket (so that broker B, started next on an empty data directory, restores it and
         takes its shards).
  race:  for each shard, A and B both take it (POST /shards/take on their admin ports) from
         the epoch its manifest holds, at the same moment. Exactly one must win (200), the
         other must be refused (409); the manifest must name the winner at the next epoch;
         the winner must accept a write to the shard and the loser refuse it (InternalFailure).

Ends with `N passed, M failed`; exits non-zero on any failure.
"""
from two_brokers import arguments, at_once, check, create_and_mirror, finish, kinesis, post, read_json, s3


def race(args):
    bucket = s3(args)
    status, listed = kinesis(args.a, "ListShards", {"StreamName": args.stream})
    if not check("ListShards on A", status == 200, listed):
        return
    wins = {"A": 0, "B": 0}
    for n, shard in enumerate(listed["Shards"]):
        sid = shard["ShardId"]
        manifest_key = f"streams/{args.stream}/shards/{sid}/manifest.json"
        before = read_json(bucket, args, manifest_key)
        if n == 0:
            check("B took the restored shards at start", before.get("owner") is not None and before["epoch"] >= 1, before)
        take = {"stream": args.stream, "shard": sid, "fromEpoch": before["epoch"]}
        results = at_once(A=lambda: post(args.a_admin + "/shards/take", take),
                          B=lambda: post(args.b_admin + "/shards/take", take))
        winners = [name for name, (status, _) in results.items() if status == 200]
        losers = [name for name, (status, _) in results.items() if status == 409]
        if not check(f"{sid}: exactly one winner, the other refused", len(winners) == 1 and len(losers) == 1, results):
            continue
        winner, loser = winners[0], losers[0]
        wins[winner] += 1
        won = results[winner][1]
        after = read_json(bucket, args, manifest_key)
        check(f"{sid}: the manifest names the winner at the next epoch",
              after.get("owner") == won["owner"] and after["epoch"] == before["epoch"] + 1 == won["epoch"],
              (after.get("owner"), after["epoch"], won))
        put = {"StreamName": args.stream, "PartitionKey": "k", "Data": "AAAA",
               "ExplicitHashKey": shard["HashKeyRange"]["StartingHashKey"]}
        endpoints = {"A": args.a, "B": args.b}
        status, answer = kinesis(endpoints[winner], "PutRecord", put)
        check(f"{sid}: the winner ({winner}) writes the shard", status == 200 and answer.get("ShardId") == sid, answer)
        status, answer = kinesis(endpoints[loser], "PutRecord", put)
        check(f"{sid}: the loser ({loser}) refuses to write it",
              status == 500 and "owned by another broker" in answer.get("message", ""), (status, answer))
    print(f"manifest race: {len(listed['Shards'])} shards; wins {wins}")


def extra(p):
    p.add_argument("--a-admin", help="admin endpoint of broker A")
    p.add_argument("--b-admin", help="admin endpoint of broker B")
    p.add_argument("--shards", type=int, default=10)


if __name__ == "__main__":
    args = arguments("owner-race", extra)
    create_and_mirror(args, args.shards) if args.phase == "setup" else race(args)
    finish()
