#!/usr/bin/env python3
"""The DynamoDB lease store against an oracle: the same cases, through boto3's DynamoDB
client, against moto's DynamoDB server and against the broker; each case's outcome (the
answer's relevant parts, or the error code) must be the same at both.

    python oracle.py --oracle http://127.0.0.1:5000 --subject http://127.0.0.1:4567

The cases are what the KCL does with its lease, coordinator-state and worker-metrics tables:
tables with a global secondary index, conditional puts, updates and deletes in the legacy
(Expected / AttributeUpdates) and expression forms, each condition holding and failing,
ReturnValues, Scan with paging and segments, Query on the index, TransactWriteItems. The last
line is "N passed, M failed".
"""

import argparse
import sys
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint):
    return boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def S(v):
    return {"S": v}


def N(v):
    return {"N": str(v)}


def lease(key, owner=None, counter=1, checkpoint="TRIM_HORIZON", **extra):
    item = {"leaseKey": S(key), "leaseCounter": N(counter), "checkpoint": S(checkpoint),
            "checkpointSubSequenceNumber": N(0), "ownerSwitchesSinceCheckpoint": N(0)}
    if owner:
        item["leaseOwner"] = S(owner)
    item.update(extra)
    return item


def item_sort_key(item):
    return tuple(sorted((k, str(v)) for k, v in item.items()))


# Where moto answers otherwise than DynamoDB documents, the broker must give DynamoDB's
# answer, stated here with the reason.
DYNAMODB_NOT_MOTO = {
    "legacy-conditional-operator-or": (
        ("ok", {"Attributes": {"leaseCounter": {"N": "3"}}}),
        "moto ignores ConditionalOperator and ANDs the Expected conditions; DynamoDB ORs them with OR",
    ),
    "query-missing-index": (
        ("error", "ValidationException"),
        "DynamoDB answers a Query on an index the table does not have with ValidationException "
        "('The table does not have the specified index'); moto with ResourceNotFoundException",
    ),
}


def normalise(op, answer):
    """The parts of an answer both must agree on."""
    answer = {k: v for k, v in answer.items()
              if k not in ("ResponseMetadata", "ConsumedCapacity") and not (k == "ItemCollectionMetrics" and not v)}
    if op in ("create_table", "describe_table", "update_table", "delete_table"):
        d = answer.get("TableDescription") or answer.get("Table")
        indexes = sorted((i["IndexName"], str(i["KeySchema"]), str(i["Projection"]))
                         for i in d.get("GlobalSecondaryIndexes", []))
        return {"TableName": d["TableName"], "KeySchema": d["KeySchema"],
                "AttributeDefinitions": sorted(d["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
                "BillingMode": (d.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
                "Indexes": indexes}
    if op in ("scan", "query") and "Items" in answer:
        # Scan order is DynamoDB's own (by partition hash): compared as a set. A Query is ordered.
        items = answer["Items"] if op == "query" else sorted(answer["Items"], key=item_sort_key)
        return {"Items": items, "Count": answer["Count"]}
    if op == "describe_continuous_backups" or op == "update_continuous_backups":
        return {"PointInTimeRecovery": answer["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
                ["PointInTimeRecoveryStatus"]}
    return answer


class Run:
    """One endpoint's run of the cases: case name -> outcome."""

    def __init__(self, endpoint, tables):
        self.db = client(endpoint)
        self.tables = tables
        self.outcomes = {}

    def call(self, name, op, **params):
        try:
            outcome = ("ok", normalise(op, getattr(self.db, op)(**params)))
        except ClientError as e:
            outcome = ("error", e.response["Error"]["Code"])
        self.outcomes[name] = outcome
        return outcome

    def pages(self, name, op, **params):
        """Every page of a Scan or Query with a small Limit: the items, as one sorted list."""
        items, start = [], None
        for _ in range(100):
            extra = {"ExclusiveStartKey": start} if start else {}
            answer = getattr(self.db, op)(Limit=2, **params, **extra)
            items += answer.get("Items", [])
            start = answer.get("LastEvaluatedKey")
            if not start:
                break
        self.outcomes[name] = ("ok", sorted(items, key=item_sort_key))

    def segments(self, name, table, total):
        items = []
        for segment in range(total):
            items += self.db.scan(TableName=table, Segment=segment, TotalSegments=total)["Items"]
        keys = [i["leaseKey"]["S"] for i in items]
        self.outcomes[name] = ("ok", {"each once": len(keys) == len(set(keys)), "keys": sorted(keys)})


def cases(r):
    t = r.tables
    lease_table, state_table = t["leases"], t["state"]
    r.call("create-lease-table", "create_table", TableName=lease_table,
           KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
           AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
           BillingMode="PAY_PER_REQUEST")
    r.call("create-existing-table", "create_table", TableName=lease_table,
           KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
           AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
           BillingMode="PAY_PER_REQUEST")
    r.call("create-provisioned-without-throughput", "create_table", TableName=t["bad"],
           KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
           AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
    r.call("create-undefined-key", "create_table", TableName=t["bad"],
           KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
           AttributeDefinitions=[{"AttributeName": "other", "AttributeType": "S"}],
           BillingMode="PAY_PER_REQUEST")
    r.call("describe-lease-table", "describe_table", TableName=lease_table)
    r.call("describe-missing-table", "describe_table", TableName=t["missing"])
    r.call("create-state-table", "create_table", TableName=state_table,
           KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
           AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
           ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 10})
    kind, listed = r.call("list-tables", "list_tables")
    if kind == "ok":  # other runs' tables may be there too
        r.outcomes["list-tables"] = ("ok", [n for n in listed["TableNames"] if n in t.values()])
    r.call("update-continuous-backups", "update_continuous_backups", TableName=lease_table,
           PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})

    # KCL 2.x: leases created with Expected Exists=false.
    for i in range(6):
        r.call(f"create-lease-{i}", "put_item", TableName=lease_table, Item=lease(f"shardId-00000000000{i}"),
               Expected={"leaseKey": {"Exists": False}})
    r.call("create-lease-again-fails", "put_item", TableName=lease_table, Item=lease("shardId-000000000000"),
           Expected={"leaseKey": {"Exists": False}})
    r.call("create-lease-expression-fails", "put_item", TableName=lease_table, Item=lease("shardId-000000000001"),
           ConditionExpression="attribute_not_exists(leaseKey)")
    r.call("get-lease", "get_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000000")},
           ConsistentRead=True)
    r.call("get-missing-lease", "get_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000099")})
    r.call("get-with-wrong-key", "get_item", TableName=lease_table, Key={"other": S("x")})
    r.call("get-projected", "get_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000000")},
           ProjectionExpression="leaseKey, #c", ExpressionAttributeNames={"#c": "leaseCounter"})

    # Taking a lease: legacy Expected on the counter, AttributeUpdates PUT and ADD.
    r.call("take-lease", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000000")},
           Expected={"leaseCounter": {"Value": N(1)}},
           AttributeUpdates={"leaseOwner": {"Value": S("worker-a"), "Action": "PUT"},
                             "leaseCounter": {"Value": N(1), "Action": "ADD"},
                             "ownerSwitchesSinceCheckpoint": {"Value": N(1), "Action": "ADD"}},
           ReturnValues="ALL_NEW")
    r.call("take-stale-lease-fails", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000000")},
           Expected={"leaseCounter": {"Value": N(1)}},
           AttributeUpdates={"leaseOwner": {"Value": S("worker-b"), "Action": "PUT"}})
    r.call("renew-with-owner-and-counter", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000000")},
           Expected={"leaseCounter": {"Value": N(2)}, "leaseOwner": {"Value": S("worker-a")}},
           AttributeUpdates={"leaseCounter": {"Value": N(1), "Action": "ADD"}}, ReturnValues="UPDATED_NEW")
    # One of two conditions holds: with OR the update is made (ADD 0: nothing changes either way).
    r.call("legacy-conditional-operator-or", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000000")},
           Expected={"leaseCounter": {"Value": N(99)}, "leaseOwner": {"Value": S("worker-a")}},
           ConditionalOperator="OR",
           AttributeUpdates={"leaseCounter": {"Value": N(0), "Action": "ADD"}}, ReturnValues="UPDATED_OLD")
    r.call("legacy-comparison-operators", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000000")},
           Expected={"leaseCounter": {"ComparisonOperator": "GE", "AttributeValueList": [N(3)]},
                     "leaseOwner": {"ComparisonOperator": "BEGINS_WITH", "AttributeValueList": [S("worker")]},
                     "pendingCheckpoint": {"ComparisonOperator": "NULL"}},
           AttributeUpdates={"checkpoint": {"Value": S("49000000000000000000000000000000000000000000000000000001"),
                                            "Action": "PUT"}})
    r.call("legacy-not-null-fails", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000000")},
           Expected={"pendingCheckpoint": {"ComparisonOperator": "NOT_NULL"}},
           AttributeUpdates={"checkpoint": {"Value": S("x"), "Action": "PUT"}})
    r.call("evict-lease-remove-owner", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000001")}, Expected={"leaseOwner": {"Exists": False}},
           AttributeUpdates={"leaseOwner": {"Value": S("worker-b")}, "checkpointSubSequenceNumber": {"Action": "DELETE"}},
           ReturnValues="ALL_OLD")

    # KCL 3.x and its lock client: expressions.
    r.call("expression-update", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000002")},
           UpdateExpression="SET #o = :o, leaseCounter = leaseCounter + :one, throughputKBps = :t REMOVE #p",
           ConditionExpression="attribute_exists(leaseKey) AND (attribute_not_exists(#o) OR #o = :none)",
           ExpressionAttributeNames={"#o": "leaseOwner", "#p": "pendingCheckpoint"},
           ExpressionAttributeValues={":o": S("worker-a"), ":one": N(1), ":t": N("12.5"), ":none": S("")},
           ReturnValues="ALL_NEW")
    r.call("expression-condition-fails", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000002")}, UpdateExpression="SET #o = :o",
           ConditionExpression="#o = :other", ExpressionAttributeNames={"#o": "leaseOwner"},
           ExpressionAttributeValues={":o": S("worker-c"), ":other": S("worker-z")})
    r.call("expression-failure-returns-old", "put_item", TableName=lease_table, Item=lease("shardId-000000000002"),
           ConditionExpression="leaseCounter < :c", ExpressionAttributeValues={":c": N(0)},
           ReturnValuesOnConditionCheckFailure="ALL_OLD")
    r.call("expression-comparisons", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000003")},
           UpdateExpression="SET childShardIds = :kids, parentShardIds = list_append(if_not_exists(parentShardIds, :empty), :p) ADD tags :t",
           ConditionExpression="leaseCounter BETWEEN :lo AND :hi AND checkpoint IN (:th, :latest) AND begins_with(leaseKey, :prefix) AND size(leaseKey) > :n AND NOT contains(leaseKey, :x) AND attribute_type(checkpoint, :s) AND leaseCounter <> :lo",
           ExpressionAttributeValues={":kids": {"SS": ["shardId-000000000010", "shardId-000000000011"]},
                                      ":empty": {"L": []}, ":p": {"L": [S("shardId-000000000000")]},
                                      ":t": {"SS": ["a", "b"]}, ":lo": N(0), ":hi": N(5), ":th": S("TRIM_HORIZON"),
                                      ":latest": S("LATEST"), ":prefix": S("shardId-"), ":n": N(5), ":x": S("zzz"),
                                      ":s": S("S")},
           ReturnValues="UPDATED_NEW")
    r.call("expression-set-delete", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000003")},
           UpdateExpression="DELETE tags :a", ExpressionAttributeValues={":a": {"SS": ["a"]}}, ReturnValues="ALL_NEW")
    r.call("expression-nested-map", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000004")},
           UpdateExpression="SET hashKeyRange = :r", ExpressionAttributeValues={
               ":r": {"M": {"startingHashKey": S("0"), "endingHashKey": S("170141183460469231731687303715884105727")}}})
    r.call("expression-nested-path", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000004")},
           UpdateExpression="SET hashKeyRange.endingHashKey = :e",
           ConditionExpression="hashKeyRange.startingHashKey = :s",
           ExpressionAttributeValues={":e": S("1"), ":s": S("0")}, ReturnValues="ALL_NEW")
    r.call("expression-unused-value", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000004")},
           UpdateExpression="SET a = :a", ExpressionAttributeValues={":a": S("x"), ":unused": S("y")})
    r.call("expression-undefined-value", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000004")}, UpdateExpression="SET a = :missing",
           ExpressionAttributeValues={":a": S("x")})
    r.call("expression-syntax-error", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000004")},
           UpdateExpression="SET = :a", ExpressionAttributeValues={":a": S("x")})
    r.call("update-key-attribute", "update_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000004")},
           UpdateExpression="SET leaseKey = :a", ExpressionAttributeValues={":a": S("x")})
    r.call("mixed-legacy-and-expression", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000004")}, UpdateExpression="SET a = :a",
           Expected={"leaseKey": {"Exists": True, "Value": S("shardId-000000000004")}},
           ExpressionAttributeValues={":a": S("x")})
    r.call("update-creates-missing-item", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000007")}, UpdateExpression="SET leaseCounter = :c",
           ExpressionAttributeValues={":c": N(1)}, ReturnValues="ALL_NEW")
    r.call("update-missing-operand-fails", "update_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000007")}, UpdateExpression="SET x = nothing + :c",
           ExpressionAttributeValues={":c": N(1)})
    r.call("put-empty-set-fails", "put_item", TableName=lease_table, Item=lease("shardId-000000000008", tags={"SS": []}))
    r.call("put-bad-number-fails", "put_item", TableName=lease_table,
           Item=lease("shardId-000000000008", leaseCounter={"N": "one"}))
    r.call("put-all-types", "put_item", TableName=lease_table, Item=lease(
        "shardId-000000000009", b={"B": b"\x00\x01"}, ns={"NS": ["1", "2"]}, bs={"BS": [b"\x02"]},
        m={"M": {"x": {"L": [{"BOOL": True}, {"NULL": True}]}}}), ReturnValues="ALL_OLD")
    r.call("get-all-types", "get_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000009")})

    # Deleting leases: conditionally, then without a condition.
    r.call("delete-lease-wrong-owner-fails", "delete_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000005")}, ConditionExpression="#o = :z",
           ExpressionAttributeNames={"#o": "leaseOwner"}, ExpressionAttributeValues={":z": S("worker-z")})
    r.call("delete-lease-legacy", "delete_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000005")},
           Expected={"leaseOwner": {"Exists": False}}, ReturnValues="ALL_OLD")
    r.call("delete-missing-lease-condition-fails", "delete_item", TableName=lease_table,
           Key={"leaseKey": S("shardId-000000000005")}, ConditionExpression="attribute_exists(leaseKey)")
    r.call("delete-missing-lease", "delete_item", TableName=lease_table, Key={"leaseKey": S("shardId-000000000005")})
    r.call("recreate-deleted-lease", "put_item", TableName=lease_table, Item=lease("shardId-000000000005", owner="worker-b"),
           Expected={"leaseKey": {"Exists": False}})

    # Listing leases.
    r.call("scan-all", "scan", TableName=lease_table)
    r.pages("scan-pages", "scan", TableName=lease_table)
    r.segments("scan-segments", lease_table, 4)
    r.call("scan-filter", "scan", TableName=lease_table, FilterExpression="#o = :a",
           ExpressionAttributeNames={"#o": "leaseOwner"}, ExpressionAttributeValues={":a": S("worker-a")})
    r.call("scan-projection", "scan", TableName=lease_table, ProjectionExpression="leaseKey")
    r.call("scan-count", "scan", TableName=lease_table, Select="COUNT")
    r.call("scan-bad-segment", "scan", TableName=lease_table, Segment=4, TotalSegments=4)

    # KCL 3.x: the owner index, then queries on it.
    r.call("add-owner-index", "update_table", TableName=lease_table,
           AttributeDefinitions=[{"AttributeName": "leaseOwner", "AttributeType": "S"},
                                 {"AttributeName": "leaseKey", "AttributeType": "S"}],
           GlobalSecondaryIndexUpdates=[{"Create": {
               "IndexName": "LeaseOwnerToLeaseKeyIndex",
               "KeySchema": [{"AttributeName": "leaseOwner", "KeyType": "HASH"},
                             {"AttributeName": "leaseKey", "KeyType": "RANGE"}],
               "Projection": {"ProjectionType": "KEYS_ONLY"}}}])
    r.call("describe-with-index", "describe_table", TableName=lease_table)
    r.call("query-owner-index", "query", TableName=lease_table, IndexName="LeaseOwnerToLeaseKeyIndex",
           KeyConditionExpression="leaseOwner = :o", ExpressionAttributeValues={":o": S("worker-a")})
    r.call("query-owner-index-backwards", "query", TableName=lease_table, IndexName="LeaseOwnerToLeaseKeyIndex",
           KeyConditionExpression="leaseOwner = :o AND leaseKey > :k", ScanIndexForward=False,
           ExpressionAttributeValues={":o": S("worker-a"), ":k": S("shardId-000000000000")})
    r.pages("query-owner-index-pages", "query", TableName=lease_table, IndexName="LeaseOwnerToLeaseKeyIndex",
            KeyConditionExpression="leaseOwner = :o", ExpressionAttributeValues={":o": S("worker-b")})
    r.call("query-table-by-key", "query", TableName=lease_table, KeyConditionExpression="leaseKey = :k",
           ExpressionAttributeValues={":k": S("shardId-000000000003")})
    r.call("query-missing-index", "query", TableName=lease_table, IndexName="Nope",
           KeyConditionExpression="leaseOwner = :o", ExpressionAttributeValues={":o": S("worker-a")})
    r.call("query-without-key-condition", "query", TableName=lease_table, IndexName="LeaseOwnerToLeaseKeyIndex",
           KeyConditionExpression="leaseKey = :k", ExpressionAttributeValues={":k": S("shardId-000000000003")})

    # The coordinator's lock table: lock client style writes, then a transaction.
    r.call("lock-acquire", "put_item", TableName=state_table,
           Item={"key": S("Leader"), "ownerName": S("worker-a"), "leaseDuration": N(20000),
                 "recordVersionNumber": S("v1")},
           ConditionExpression="attribute_not_exists(#k)", ExpressionAttributeNames={"#k": "key"})
    r.call("lock-acquire-held-fails", "put_item", TableName=state_table,
           Item={"key": S("Leader"), "ownerName": S("worker-b"), "leaseDuration": N(20000),
                 "recordVersionNumber": S("v2")},
           ConditionExpression="attribute_not_exists(#k)", ExpressionAttributeNames={"#k": "key"})
    r.call("lock-heartbeat", "update_item", TableName=state_table, Key={"key": S("Leader")},
           UpdateExpression="SET #rvn = :new", ConditionExpression="#rvn = :old AND #o = :me",
           ExpressionAttributeNames={"#rvn": "recordVersionNumber", "#o": "ownerName"},
           ExpressionAttributeValues={":new": S("v3"), ":old": S("v1"), ":me": S("worker-a")}, ReturnValues="ALL_NEW")
    r.call("transaction", "transact_write_items", TransactItems=[
        {"Put": {"TableName": state_table, "Item": {"key": S("Migration"), "state": S("done")},
                 "ConditionExpression": "attribute_not_exists(#k)", "ExpressionAttributeNames": {"#k": "key"}}},
        {"Update": {"TableName": state_table, "Key": {"key": S("Leader")}, "UpdateExpression": "SET #s = :s",
                    "ExpressionAttributeNames": {"#s": "state"}, "ExpressionAttributeValues": {":s": S("migrated")}}},
        {"ConditionCheck": {"TableName": lease_table, "Key": {"leaseKey": S("shardId-000000000000")},
                            "ConditionExpression": "attribute_exists(leaseKey)"}},
    ])
    r.call("transaction-cancelled", "transact_write_items", TransactItems=[
        {"Put": {"TableName": state_table, "Item": {"key": S("Other"), "state": S("x")}}},
        {"Delete": {"TableName": state_table, "Key": {"key": S("Migration")},
                    "ConditionExpression": "#s = :wrong", "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {":wrong": S("nope")}}},
    ])
    r.call("after-transactions", "scan", TableName=state_table)

    r.call("delete-state-table", "delete_table", TableName=state_table)
    r.call("delete-state-table-again", "delete_table", TableName=state_table)
    r.call("delete-lease-table", "delete_table", TableName=lease_table)
    r.call("put-into-deleted-table", "put_item", TableName=lease_table, Item=lease("shardId-000000000000"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", required=True, help="moto's server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--subject", required=True, help="the broker, e.g. http://127.0.0.1:4567")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    tables = {name: f"sf-oracle-{run_id}-{name}" for name in ("leases", "state", "bad", "missing")}
    runs = {}
    for side, endpoint in (("oracle", args.oracle), ("subject", args.subject)):
        runs[side] = Run(endpoint, tables)
        cases(runs[side])
    oracle, subject = runs["oracle"].outcomes, runs["subject"].outcomes
    failed = []
    for name, want in oracle.items():
        got = subject.get(name)
        if name in DYNAMODB_NOT_MOTO:
            documented, why = DYNAMODB_NOT_MOTO[name]
            if want == documented:
                print(f"note  {name}: moto now agrees with DynamoDB; drop it from DYNAMODB_NOT_MOTO")
            want = documented
            print(f"      {name}: moto answers {oracle[name]}; expected DynamoDB's answer: {why}")
        if got == want:
            print(f"ok    {name}: {want[0]}{' ' + want[1] if want[0] == 'error' else ''}")
        else:
            failed.append(name)
            print(f"FAIL  {name}:\n        moto:   {want}\n        broker: {got}")
    print(f"{len(oracle) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
