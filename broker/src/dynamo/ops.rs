//! The operations: CreateTable, DescribeTable, UpdateTable (global secondary indexes),
//! DeleteTable, ListTables, GetItem, PutItem, UpdateItem, DeleteItem (expressions or the
//! legacy Expected / AttributeUpdates, ReturnValues), Scan (paging, parallel segments,
//! filters), Query (key conditions on the table or an index), TransactWriteItems, and
//! Describe/UpdateContinuousBackups (answered, nothing to back up beyond the object store).

use super::DynamoError;
use super::expr::{self, Condition, Placeholders, Update};
use super::store::{
    self, AttributeDefinition, IndexMeta, KeySchemaElement, Projection, Slot, TableMeta, Tables, Throughput,
};
use super::value::{AttributeValue, Item};
use serde::Deserialize;
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use streamfabric_api::types::Timestamp;

/// Where a table's ARN says it lives.
pub struct Account<'a> {
    pub region: &'a str,
    pub account: &'a str,
}

const SUPPORTED: &str = "CreateTable, DescribeTable, UpdateTable, DeleteTable, ListTables, GetItem, PutItem, \
UpdateItem, DeleteItem, Scan, Query, TransactWriteItems, DescribeContinuousBackups, UpdateContinuousBackups";

/// Whether `op` is one of the operations served (the rest are UnknownOperationException).
pub fn serves(op: &str) -> bool {
    SUPPORTED.split(", ").any(|served| served == op)
}

/// The largest item DynamoDB stores.
const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Answer one operation (its name after `DynamoDB_20120810.`).
pub async fn call(tables: &Tables, account: &Account<'_>, op: &str, body: &[u8]) -> Result<Vec<u8>, DynamoError> {
    fn input<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, DynamoError> {
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
        serde_json::from_slice(body)
            .map_err(|e| DynamoError::serialization(format!("The request body could not be read: {e}")))
    }
    let answer = match op {
        "CreateTable" => create_table(tables, account, input(body)?).await?,
        "DescribeTable" => describe_table(tables, account, input(body)?).await?,
        "UpdateTable" => update_table(tables, account, input(body)?).await?,
        "DeleteTable" => delete_table(tables, account, input(body)?).await?,
        "ListTables" => list_tables(tables, input(body)?).await?,
        "GetItem" => get_item(tables, input(body)?).await?,
        "PutItem" => put_item(tables, input(body)?).await?,
        "UpdateItem" => update_item(tables, input(body)?).await?,
        "DeleteItem" => delete_item(tables, input(body)?).await?,
        "Scan" => scan(tables, input(body)?).await?,
        "Query" => query(tables, input(body)?).await?,
        "TransactWriteItems" => transact_write_items(tables, input(body)?).await?,
        "DescribeContinuousBackups" | "UpdateContinuousBackups" => continuous_backups(tables, input(body)?).await?,
        other => {
            return Err(DynamoError::unknown_operation(format!(
                "streamfabric's DynamoDB-compatible lease store does not serve {other}; it serves {SUPPORTED}."
            )));
        }
    };
    Ok(serde_json::to_vec(&answer).expect("JSON"))
}

fn table_name(name: &Option<String>) -> Result<&str, DynamoError> {
    let name = name.as_deref().ok_or_else(|| {
        DynamoError::validation("1 validation error detected: Value null at 'tableName' failed to satisfy constraint: Member must not be null")
    })?;
    let constraint = if name.len() < 3 {
        Some("Member must have length greater than or equal to 3")
    } else if name.len() > 255 {
        Some("Member must have length less than or equal to 255")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        Some("Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
    } else {
        None
    };
    match constraint {
        Some(c) => Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{name}' at 'tableName' failed to satisfy constraint: {c}"
        ))),
        None => Ok(name),
    }
}

async fn table(tables: &Tables, name: &Option<String>) -> Result<TableMeta, DynamoError> {
    let name = table_name(name)?;
    Ok(tables.get(name).await?.ok_or_else(|| store::not_found(name))?.0)
}

// ---- tables ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IndexInput {
    index_name: Option<String>,
    key_schema: Option<Vec<KeySchemaElement>>,
    projection: Option<Projection>,
    provisioned_throughput: Option<Throughput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateTableInput {
    table_name: Option<String>,
    key_schema: Option<Vec<KeySchemaElement>>,
    attribute_definitions: Option<Vec<AttributeDefinition>>,
    billing_mode: Option<String>,
    provisioned_throughput: Option<Throughput>,
    global_secondary_indexes: Option<Vec<IndexInput>>,
    local_secondary_indexes: Option<Vec<Value>>,
    tags: Option<Vec<Tag>>,
    deletion_protection_enabled: Option<bool>,
    stream_specification: Option<Value>,
}

fn check_key_schema(schema: &[KeySchemaElement], what: &str) -> Result<(), DynamoError> {
    let types: Vec<&str> = schema.iter().map(|k| k.key_type.as_str()).collect();
    if !matches!(types.as_slice(), ["HASH"] | ["HASH", "RANGE"]) {
        return Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{types:?}' at '{what}' failed to satisfy constraint: a HASH key, optionally followed by a RANGE key"
        )));
    }
    Ok(())
}

fn check_billing(mode: &str, throughput: &Option<Throughput>) -> Result<(), DynamoError> {
    match (mode, throughput) {
        ("PROVISIONED", None) => Err(DynamoError::validation(
            "One or more parameter values were invalid: ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
        )),
        ("PAY_PER_REQUEST", Some(_)) => Err(DynamoError::validation(
            "One or more parameter values were invalid: Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
        )),
        ("PROVISIONED" | "PAY_PER_REQUEST", _) => Ok(()),
        (other, _) => Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
        ))),
    }
}

fn index_meta(input: IndexInput, billing_mode: &str) -> Result<IndexMeta, DynamoError> {
    let name = input
        .index_name
        .ok_or_else(|| DynamoError::validation("IndexName must be given for a global secondary index"))?;
    let key_schema =
        input.key_schema.ok_or_else(|| DynamoError::validation(format!("Index {name}: KeySchema must be given")))?;
    check_key_schema(&key_schema, "globalSecondaryIndexes.member.keySchema")?;
    let projection =
        input.projection.ok_or_else(|| DynamoError::validation(format!("Index {name}: Projection must be given")))?;
    match projection.projection_type.as_deref() {
        Some("ALL" | "KEYS_ONLY") if projection.non_key_attributes.is_none() => {}
        Some("INCLUDE") if projection.non_key_attributes.is_some() => {}
        _ => {
            return Err(DynamoError::validation(format!(
                "One or more parameter values were invalid: Index {name}: ProjectionType must be ALL, KEYS_ONLY, or INCLUDE with NonKeyAttributes"
            )));
        }
    }
    check_billing(billing_mode, &input.provisioned_throughput)?;
    Ok(IndexMeta { name, key_schema, projection, throughput: input.provisioned_throughput })
}

/// Every key attribute (of the table and its indexes) defined, and nothing else.
fn check_definitions(meta: &TableMeta) -> Result<(), DynamoError> {
    let mut keys: BTreeSet<&str> = meta.key_names().into_iter().collect();
    for index in &meta.indexes {
        keys.extend(store::key_names(&index.key_schema));
    }
    let defined: BTreeSet<&str> = meta.attribute_definitions.iter().map(|d| d.attribute_name.as_str()).collect();
    if let Some(d) = meta.attribute_definitions.iter().find(|d| !["S", "N", "B"].contains(&d.attribute_type.as_str())) {
        return Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{}' at 'attributeDefinitions.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]",
            d.attribute_type
        )));
    }
    if keys != defined {
        return Err(DynamoError::validation(format!(
            "One or more parameter values were invalid: Some AttributeDefinitions are not used or not defined; key attributes: {keys:?}, defined: {defined:?}"
        )));
    }
    Ok(())
}

async fn create_table(tables: &Tables, account: &Account<'_>, input: CreateTableInput) -> Result<Value, DynamoError> {
    let name = table_name(&input.table_name)?.to_string();
    let key_schema = input.key_schema.ok_or_else(|| {
        DynamoError::validation("1 validation error detected: Value null at 'keySchema' failed to satisfy constraint: Member must not be null")
    })?;
    check_key_schema(&key_schema, "keySchema")?;
    let attribute_definitions = input.attribute_definitions.ok_or_else(|| {
        DynamoError::validation(
            "1 validation error detected: Value null at 'attributeDefinitions' failed to satisfy constraint: Member must not be null",
        )
    })?;
    if input.local_secondary_indexes.is_some() {
        return Err(DynamoError::validation("streamfabric's lease store does not support LocalSecondaryIndexes"));
    }
    if input.stream_specification.as_ref().is_some_and(|s| s["StreamEnabled"] == true) {
        return Err(DynamoError::validation("streamfabric's lease store does not support DynamoDB Streams"));
    }
    let billing_mode = input.billing_mode.unwrap_or_else(|| "PROVISIONED".into());
    check_billing(&billing_mode, &input.provisioned_throughput)?;
    let indexes = input.global_secondary_indexes.unwrap_or_default();
    let indexes = indexes.into_iter().map(|i| index_meta(i, &billing_mode)).collect::<Result<Vec<_>, _>>()?;
    let meta = TableMeta {
        name,
        id: format!("{:016x}", rand::random::<u64>()),
        created_ms: Timestamp::now().millis(),
        key_schema,
        attribute_definitions,
        billing_mode,
        throughput: input.provisioned_throughput,
        indexes,
        tags: input.tags.unwrap_or_default().into_iter().map(|t| (t.key, t.value)).collect(),
        deletion_protection: input.deletion_protection_enabled.unwrap_or(false),
    };
    check_definitions(&meta)?;
    tables.create(&meta).await?;
    Ok(json!({ "TableDescription": description(account, &meta, "CREATING", "CREATING", None) }))
}

/// A TableDescription; `counts`: the items and their bytes, where they were counted.
fn description(
    account: &Account<'_>,
    meta: &TableMeta,
    status: &str,
    index_status: &str,
    counts: Option<(usize, usize)>,
) -> Value {
    let arn = format!("arn:aws:dynamodb:{}:{}:table/{}", account.region, account.account, meta.name);
    let throughput = |t: &Option<Throughput>| {
        let t = t.clone().unwrap_or(Throughput { read_capacity_units: 0, write_capacity_units: 0 });
        json!({"ReadCapacityUnits": t.read_capacity_units, "WriteCapacityUnits": t.write_capacity_units, "NumberOfDecreasesToday": 0})
    };
    let (items, bytes) = counts.unwrap_or((0, 0));
    let mut d = json!({
        "TableName": meta.name,
        "TableId": meta.id,
        "TableArn": arn,
        "TableStatus": status,
        "KeySchema": meta.key_schema,
        "AttributeDefinitions": meta.attribute_definitions,
        "CreationDateTime": meta.created_ms as f64 / 1000.0,
        "ItemCount": items,
        "TableSizeBytes": bytes,
        "ProvisionedThroughput": throughput(&meta.throughput),
        "BillingModeSummary": {"BillingMode": meta.billing_mode},
        "DeletionProtectionEnabled": meta.deletion_protection,
    });
    if !meta.indexes.is_empty() {
        d["GlobalSecondaryIndexes"] = meta
            .indexes
            .iter()
            .map(|i| {
                json!({
                    "IndexName": i.name,
                    "KeySchema": i.key_schema,
                    "Projection": i.projection,
                    "IndexStatus": index_status,
                    "IndexArn": format!("{arn}/index/{}", i.name),
                    "ItemCount": 0,
                    "IndexSizeBytes": 0,
                    "ProvisionedThroughput": throughput(&i.throughput),
                })
            })
            .collect();
    }
    d
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TableInput {
    table_name: Option<String>,
}

async fn describe_table(tables: &Tables, account: &Account<'_>, input: TableInput) -> Result<Value, DynamoError> {
    let meta = table(tables, &input.table_name).await?;
    let items = tables.all(&meta).await?;
    let bytes = items.iter().map(|(_, i)| item_size(i)).sum();
    Ok(json!({ "Table": description(account, &meta, "ACTIVE", "ACTIVE", Some((items.len(), bytes))) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IndexUpdate {
    create: Option<IndexInput>,
    delete: Option<IndexName>,
    update: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IndexName {
    index_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateTableInput {
    table_name: Option<String>,
    attribute_definitions: Option<Vec<AttributeDefinition>>,
    billing_mode: Option<String>,
    provisioned_throughput: Option<Throughput>,
    global_secondary_index_updates: Option<Vec<IndexUpdate>>,
    deletion_protection_enabled: Option<bool>,
}

async fn update_table(tables: &Tables, account: &Account<'_>, input: UpdateTableInput) -> Result<Value, DynamoError> {
    let name = table_name(&input.table_name)?.to_string();
    let meta = tables
        .update(&name, |meta| {
            if let Some(mode) = &input.billing_mode {
                let throughput = input.provisioned_throughput.clone().or_else(|| meta.throughput.clone());
                let throughput =
                    if mode == "PAY_PER_REQUEST" { input.provisioned_throughput.clone() } else { throughput };
                check_billing(mode, &throughput)?;
                meta.billing_mode = mode.clone();
                meta.throughput = throughput;
            } else if let Some(t) = &input.provisioned_throughput {
                check_billing(&meta.billing_mode, &Some(t.clone()))?;
                meta.throughput = Some(t.clone());
            }
            if let Some(p) = input.deletion_protection_enabled {
                meta.deletion_protection = p;
            }
            for definition in input.attribute_definitions.iter().flatten() {
                meta.attribute_definitions.retain(|d| d.attribute_name != definition.attribute_name);
                meta.attribute_definitions.push(definition.clone());
            }
            for change in input.global_secondary_index_updates.iter().flatten() {
                if let Some(create) = &change.create {
                    let index = index_meta(
                        IndexInput {
                            index_name: create.index_name.clone(),
                            key_schema: create.key_schema.clone(),
                            projection: create.projection.clone(),
                            provisioned_throughput: create.provisioned_throughput.clone(),
                        },
                        &meta.billing_mode,
                    )?;
                    if meta.indexes.iter().any(|i| i.name == index.name) {
                        return Err(DynamoError::validation(format!(
                            "One or more parameter values were invalid: Index with name: {} already exists",
                            index.name
                        )));
                    }
                    meta.indexes.push(index);
                }
                if let Some(delete) = &change.delete {
                    let before = meta.indexes.len();
                    meta.indexes.retain(|i| i.name != delete.index_name);
                    if meta.indexes.len() == before {
                        return Err(DynamoError::not_found(format!(
                            "Requested resource not found: Index: {} not found",
                            delete.index_name
                        )));
                    }
                }
                if change.update.is_some() {
                    return Err(DynamoError::validation(
                        "streamfabric's lease store has no index throughput to update",
                    ));
                }
            }
            // Definitions no key uses any more go, as DynamoDB drops them.
            let mut keys: BTreeSet<String> = meta.key_names().into_iter().map(String::from).collect();
            for index in &meta.indexes {
                keys.extend(store::key_names(&index.key_schema).into_iter().map(String::from));
            }
            meta.attribute_definitions.retain(|d| keys.contains(&d.attribute_name));
            check_definitions(meta)
        })
        .await?;
    Ok(json!({ "TableDescription": description(account, &meta, "ACTIVE", "CREATING", None) }))
}

async fn delete_table(tables: &Tables, account: &Account<'_>, input: TableInput) -> Result<Value, DynamoError> {
    let meta = table(tables, &input.table_name).await?;
    if meta.deletion_protection {
        return Err(DynamoError::validation(
            "Resource cannot be deleted as it is currently protected against deletion. Disable deletion protection first.",
        ));
    }
    tables.delete(&meta).await?;
    Ok(json!({ "TableDescription": description(account, &meta, "DELETING", "DELETING", None) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTablesInput {
    exclusive_start_table_name: Option<String>,
    limit: Option<i64>,
}

async fn list_tables(tables: &Tables, input: ListTablesInput) -> Result<Value, DynamoError> {
    let limit = input.limit.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and 100"
        )));
    }
    let names = tables.names().await?;
    let after: Vec<&String> = names
        .iter()
        .filter(|n| input.exclusive_start_table_name.as_ref().is_none_or(|s| n.as_str() > s.as_str()))
        .collect();
    let page: Vec<&String> = after.iter().take(limit as usize).copied().collect();
    let mut out = json!({ "TableNames": page });
    if after.len() > page.len() {
        out["LastEvaluatedTableName"] = json!(page.last());
    }
    Ok(out)
}

// ---- items ----

fn item_size(item: &Item) -> usize {
    serde_json::to_vec(item).map_or(0, |v| v.len())
}

fn check_item(meta: &TableMeta, item: &Item) -> Result<String, DynamoError> {
    for v in item.values() {
        v.validate()?;
    }
    if item_size(item) > MAX_ITEM_BYTES {
        return Err(DynamoError::validation("Item size has exceeded the maximum allowed size"));
    }
    for index in &meta.indexes {
        for name in store::key_names(&index.key_schema) {
            let want = meta.attribute_type(name).unwrap_or("S");
            if let Some(v) = item.get(name)
                && v.type_name() != want
            {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Type mismatch for Index Key {name} Expected: {want} Actual: {} IndexName: {}",
                    v.type_name(),
                    index.name
                )));
            }
        }
    }
    meta.item_key(item)
}

/// What PutItem, UpdateItem and DeleteItem share: a condition (ConditionExpression or the
/// legacy Expected, never both), the placeholders, and what to answer with.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Conditional {
    condition_expression: Option<String>,
    expected: Option<BTreeMap<String, expr::ExpectedValue>>,
    conditional_operator: Option<String>,
    expression_attribute_names: Option<BTreeMap<String, String>>,
    expression_attribute_values: Option<BTreeMap<String, AttributeValue>>,
    return_values: Option<String>,
    return_values_on_condition_check_failure: Option<String>,
}

impl Conditional {
    fn placeholders(&mut self) -> Result<Placeholders, DynamoError> {
        Placeholders::new(self.expression_attribute_names.take(), self.expression_attribute_values.take())
    }

    fn condition(&self, placeholders: &mut Placeholders) -> Result<Option<Condition>, DynamoError> {
        match (&self.condition_expression, &self.expected) {
            (Some(_), Some(_)) => Err(DynamoError::validation(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}",
            )),
            (Some(text), None) => Ok(Some(expr::parse_condition(text, "ConditionExpression", placeholders)?)),
            (None, Some(e)) => expr::expected(e, self.conditional_operator.as_deref()),
            (None, None) => Ok(None),
        }
    }

    /// ReturnValuesOnConditionCheckFailure ALL_OLD: a failed check answers with the item.
    fn old_on_failure(&self) -> bool {
        self.return_values_on_condition_check_failure.as_deref() == Some("ALL_OLD")
    }
}

fn return_values(given: &Option<String>, allowed: &[&str]) -> Result<String, DynamoError> {
    let value = given.clone().unwrap_or_else(|| "NONE".into());
    if !allowed.contains(&value.as_str()) {
        return Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{value}' at 'returnValues' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )));
    }
    Ok(value)
}

/// Read, check, change and write back one item, retried when another writer changed it in
/// between: the write is conditional on the version the condition was checked against.
/// `change` gives the new item (None: deleted). Returns (old, new).
async fn write_item(
    tables: &Tables,
    meta: &TableMeta,
    key: &str,
    condition: Option<&Condition>,
    return_old_on_failure: bool,
    mut change: impl FnMut(Option<&Item>) -> Result<Option<Item>, DynamoError>,
) -> Result<(Option<Item>, Option<Item>), DynamoError> {
    for _ in 0..20 {
        let slot: Slot = tables.read(meta, key).await?;
        let current = slot.item.clone().unwrap_or_default();
        if let Some(c) = condition
            && !c.holds(&current)?
        {
            let mut failed = DynamoError::condition_failed();
            if return_old_on_failure {
                failed.item = slot.item.clone();
            }
            return Err(failed);
        }
        let next = change(slot.item.as_ref())?;
        if tables.write(meta, key, &slot, next.as_ref()).await? {
            return Ok((slot.item, next));
        }
    }
    Err(DynamoError::internal("The item kept changing under this write; retry."))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetItemInput {
    table_name: Option<String>,
    key: Option<Item>,
    projection_expression: Option<String>,
    attributes_to_get: Option<Vec<String>>,
    expression_attribute_names: Option<BTreeMap<String, String>>,
    #[serde(rename = "ConsistentRead")]
    _consistent_read: Option<bool>,
}

fn projection(
    expression: &Option<String>,
    attributes_to_get: &Option<Vec<String>>,
    placeholders: &mut Placeholders,
) -> Result<Option<Vec<expr::Path>>, DynamoError> {
    match (expression, attributes_to_get) {
        (Some(_), Some(_)) => Err(DynamoError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributesToGet} Expression parameters: {ProjectionExpression}",
        )),
        (Some(text), None) => Ok(Some(expr::parse_projection(text, placeholders)?)),
        (None, Some(names)) => Ok(Some(names.iter().map(|n| vec![super::value::Step::Key(n.clone())]).collect())),
        (None, None) => Ok(None),
    }
}

async fn get_item(tables: &Tables, input: GetItemInput) -> Result<Value, DynamoError> {
    let meta = table(tables, &input.table_name).await?;
    let key = input
        .key
        .as_ref()
        .ok_or_else(|| DynamoError::validation("The provided key element does not match the schema"))?;
    let mut placeholders = Placeholders::new(input.expression_attribute_names.clone(), None)?;
    let paths = projection(&input.projection_expression, &input.attributes_to_get, &mut placeholders)?;
    placeholders.check_all_used()?;
    let object = meta.check_key(key)?;
    Ok(match tables.read(&meta, &object).await?.item {
        Some(item) => json!({ "Item": paths.map_or(item.clone(), |p| expr::project(&item, &p)) }),
        None => json!({}),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutItemInput {
    table_name: Option<String>,
    item: Option<Item>,
    #[serde(flatten)]
    conditional: Conditional,
}

async fn put_item(tables: &Tables, mut input: PutItemInput) -> Result<Value, DynamoError> {
    let meta = table(tables, &input.table_name).await?;
    let item = input.item.ok_or_else(|| {
        DynamoError::validation(
            "1 validation error detected: Value null at 'item' failed to satisfy constraint: Member must not be null",
        )
    })?;
    let returns = return_values(&input.conditional.return_values, &["NONE", "ALL_OLD"])?;
    let mut placeholders = input.conditional.placeholders()?;
    let condition = input.conditional.condition(&mut placeholders)?;
    placeholders.check_all_used()?;
    let key = check_item(&meta, &item)?;
    let old_on_failure = input.conditional.old_on_failure();
    let (old, _) =
        write_item(tables, &meta, &key, condition.as_ref(), old_on_failure, |_| Ok(Some(item.clone()))).await?;
    Ok(match (returns.as_str(), old) {
        ("ALL_OLD", Some(old)) => json!({ "Attributes": old }),
        _ => json!({}),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateItemInput {
    table_name: Option<String>,
    key: Option<Item>,
    update_expression: Option<String>,
    attribute_updates: Option<BTreeMap<String, expr::AttributeValueUpdate>>,
    #[serde(flatten)]
    conditional: Conditional,
}

async fn update_item(tables: &Tables, mut input: UpdateItemInput) -> Result<Value, DynamoError> {
    let meta = table(tables, &input.table_name).await?;
    let key = input
        .key
        .as_ref()
        .ok_or_else(|| DynamoError::validation("The provided key element does not match the schema"))?;
    let returns =
        return_values(&input.conditional.return_values, &["NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"])?;
    let mut placeholders = input.conditional.placeholders()?;
    let update: Update = match (&input.update_expression, &input.attribute_updates) {
        (Some(_), Some(_)) => {
            return Err(DynamoError::validation(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributeUpdates} Expression parameters: {UpdateExpression}",
            ));
        }
        (Some(text), None) => expr::parse_update(text, &mut placeholders)?,
        (None, Some(u)) => expr::attribute_updates(u)?,
        (None, None) => Update::default(),
    };
    let condition = input.conditional.condition(&mut placeholders)?;
    if input.attribute_updates.is_some() && input.conditional.condition_expression.is_some() {
        return Err(DynamoError::validation(
            "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {AttributeUpdates} Expression parameters: {ConditionExpression}",
        ));
    }
    placeholders.check_all_used()?;
    let object = meta.check_key(key)?;
    let key_names = meta.key_names();
    let old_on_failure = input.conditional.old_on_failure();
    let mut touched = BTreeSet::new();
    let (old, new) = write_item(tables, &meta, &object, condition.as_ref(), old_on_failure, |current| {
        // A missing item is created from its key.
        let base = current.cloned().unwrap_or_else(|| key.clone());
        let (next, changed) = update.apply(&base, &key_names)?;
        check_item(&meta, &next)?;
        touched = changed;
        Ok(Some(next))
    })
    .await?;
    let pick = |item: Option<Item>| -> Item {
        item.unwrap_or_default().into_iter().filter(|(k, _)| touched.contains(k)).collect()
    };
    let attributes = match returns.as_str() {
        "ALL_OLD" => old.unwrap_or_default(),
        "ALL_NEW" => new.unwrap_or_default(),
        "UPDATED_OLD" => pick(old),
        "UPDATED_NEW" => pick(new),
        _ => Item::new(),
    };
    Ok(if attributes.is_empty() { json!({}) } else { json!({ "Attributes": attributes }) })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteItemInput {
    table_name: Option<String>,
    key: Option<Item>,
    #[serde(flatten)]
    conditional: Conditional,
}

async fn delete_item(tables: &Tables, mut input: DeleteItemInput) -> Result<Value, DynamoError> {
    let meta = table(tables, &input.table_name).await?;
    let key = input
        .key
        .as_ref()
        .ok_or_else(|| DynamoError::validation("The provided key element does not match the schema"))?;
    let returns = return_values(&input.conditional.return_values, &["NONE", "ALL_OLD"])?;
    let mut placeholders = input.conditional.placeholders()?;
    let condition = input.conditional.condition(&mut placeholders)?;
    placeholders.check_all_used()?;
    let object = meta.check_key(key)?;
    let old_on_failure = input.conditional.old_on_failure();
    let (old, _) = write_item(tables, &meta, &object, condition.as_ref(), old_on_failure, |_| Ok(None)).await?;
    Ok(match (returns.as_str(), old) {
        ("ALL_OLD", Some(old)) => json!({ "Attributes": old }),
        _ => json!({}),
    })
}

// ---- reads of many items ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReadInput {
    table_name: Option<String>,
    index_name: Option<String>,
    limit: Option<i64>,
    exclusive_start_key: Option<Item>,
    filter_expression: Option<String>,
    projection_expression: Option<String>,
    attributes_to_get: Option<Vec<String>>,
    expression_attribute_names: Option<BTreeMap<String, String>>,
    expression_attribute_values: Option<BTreeMap<String, AttributeValue>>,
    select: Option<String>,
    segment: Option<i64>,
    total_segments: Option<i64>,
    key_condition_expression: Option<String>,
    key_conditions: Option<BTreeMap<String, Value>>,
    scan_filter: Option<Value>,
    query_filter: Option<Value>,
    scan_index_forward: Option<bool>,
    #[serde(rename = "ConsistentRead")]
    _consistent_read: Option<bool>,
}

/// The items a Scan or Query reads, in its order, each with its position for paging.
struct Source {
    items: Vec<Item>,
    /// The key attributes that say where a page ended (the table's, and the index's).
    key_names: Vec<String>,
    projection: Option<(Projection, Vec<String>)>,
}

/// The items of the table, or of one of its indexes (those that have the index's keys,
/// ordered by them), in key order.
async fn source(tables: &Tables, meta: &TableMeta, index_name: &Option<String>) -> Result<Source, DynamoError> {
    let items: Vec<Item> = tables.all(meta).await?.into_iter().map(|(_, i)| i).collect();
    let table_keys: Vec<String> = meta.key_names().into_iter().map(String::from).collect();
    let Some(name) = index_name else {
        let mut items = items;
        sort_by(&mut items, &table_keys);
        return Ok(Source { items, key_names: table_keys, projection: None });
    };
    let index = meta
        .indexes
        .iter()
        .find(|i| &i.name == name)
        .ok_or_else(|| DynamoError::validation(format!("The table does not have the specified index: {name}")))?;
    let index_keys: Vec<String> = store::key_names(&index.key_schema).into_iter().map(String::from).collect();
    let mut items: Vec<Item> = items.into_iter().filter(|i| index_keys.iter().all(|k| i.contains_key(k))).collect();
    let mut order = index_keys.clone();
    order.extend(table_keys.iter().filter(|k| !index_keys.contains(k)).cloned());
    sort_by(&mut items, &order);
    // What every projection keeps: the table's keys and the index's (`order` holds both).
    let projected_keys = order.clone();
    Ok(Source { items, key_names: order, projection: Some((index.projection.clone(), projected_keys)) })
}

fn sort_by(items: &mut [Item], names: &[String]) {
    items.sort_by(|a, b| compare_on(a, b, names));
}

fn compare_on(a: &Item, b: &Item, names: &[String]) -> Ordering {
    for name in names {
        let order = match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) => x.order(y).unwrap_or(Ordering::Equal),
            (x, y) => x.is_some().cmp(&y.is_some()),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// An index's projection of an item.
fn index_projection(item: &Item, projection: &Option<(Projection, Vec<String>)>) -> Item {
    let Some((p, keys)) = projection else { return item.clone() };
    match p.projection_type.as_deref() {
        Some("KEYS_ONLY") => {
            item.iter().filter(|(k, _)| keys.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        Some("INCLUDE") => {
            let extra = p.non_key_attributes.clone().unwrap_or_default();
            item.iter()
                .filter(|(k, _)| keys.contains(k) || extra.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
        _ => item.clone(),
    }
}

/// One page of `items` (in order) after ExclusiveStartKey, up to Limit evaluated, then
/// filtered and projected.
fn page(
    source: Source,
    input: &ReadInput,
    filter: Option<&Condition>,
    paths: Option<&[expr::Path]>,
    reverse: bool,
) -> Result<Value, DynamoError> {
    let limit = match input.limit {
        Some(l) if l < 1 => {
            return Err(DynamoError::validation(format!(
                "1 validation error detected: Value '{l}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
            )));
        }
        Some(l) => l as usize,
        None => usize::MAX,
    };
    let mut items = source.items;
    if reverse {
        items.reverse();
    }
    let start = match &input.exclusive_start_key {
        Some(start) => {
            let before = |i: &Item| {
                let o = compare_on(i, start, &source.key_names);
                if reverse { o != Ordering::Less } else { o != Ordering::Greater }
            };
            items.iter().take_while(|i| before(i)).count()
        }
        None => 0,
    };
    let rest = &items[start..];
    let evaluated = &rest[..rest.len().min(limit)];
    let count_only = input.select.as_deref() == Some("COUNT");
    let mut out = Vec::new();
    for item in evaluated {
        if let Some(f) = filter
            && !f.holds(item)?
        {
            continue;
        }
        let visible = index_projection(item, &source.projection);
        out.push(match paths {
            Some(p) => expr::project(&visible, p),
            None => visible,
        });
    }
    let mut answer = json!({ "Count": out.len(), "ScannedCount": evaluated.len() });
    if !count_only {
        answer["Items"] = serde_json::to_value(&out).expect("items serialise");
    }
    if evaluated.len() == limit && rest.len() > limit {
        let last = &evaluated[evaluated.len() - 1];
        let key: Item = source.key_names.iter().filter_map(|k| Some((k.clone(), last.get(k)?.clone()))).collect();
        answer["LastEvaluatedKey"] = serde_json::to_value(&key).expect("keys serialise");
    }
    Ok(answer)
}

fn refuse_legacy_filters(input: &ReadInput) -> Result<(), DynamoError> {
    if input.scan_filter.is_some() || input.query_filter.is_some() {
        return Err(DynamoError::validation(
            "streamfabric's lease store does not support ScanFilter or QueryFilter; use FilterExpression",
        ));
    }
    match input.select.as_deref() {
        None | Some("ALL_ATTRIBUTES" | "ALL_PROJECTED_ATTRIBUTES" | "COUNT" | "SPECIFIC_ATTRIBUTES") => Ok(()),
        Some(other) => Err(DynamoError::validation(format!(
            "1 validation error detected: Value '{other}' at 'select' failed to satisfy constraint: Member must satisfy enum value set: [SPECIFIC_ATTRIBUTES, COUNT, ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]"
        ))),
    }
}

async fn scan(tables: &Tables, input: ReadInput) -> Result<Value, DynamoError> {
    refuse_legacy_filters(&input)?;
    let meta = table(tables, &input.table_name).await?;
    let segments = match (input.segment, input.total_segments) {
        (None, None) => None,
        (Some(s), Some(t)) if (1..=1_000_000).contains(&t) && (0..t).contains(&s) => Some((s as u64, t as u64)),
        (Some(_), Some(t)) if !(1..=1_000_000).contains(&t) => {
            return Err(DynamoError::validation(format!(
                "1 validation error detected: Value '{t}' at 'totalSegments' failed to satisfy constraint: Member must have value between 1 and 1000000"
            )));
        }
        (Some(s), Some(t)) => {
            return Err(DynamoError::validation(format!(
                "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {s} is not less than TotalSegments: {t}"
            )));
        }
        _ => {
            return Err(DynamoError::validation(
                "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
            ));
        }
    };
    let mut placeholders =
        Placeholders::new(input.expression_attribute_names.clone(), input.expression_attribute_values.clone())?;
    let filter = input
        .filter_expression
        .as_deref()
        .map(|f| expr::parse_condition(f, "FilterExpression", &mut placeholders))
        .transpose()?;
    let paths = projection(&input.projection_expression, &input.attributes_to_get, &mut placeholders)?;
    placeholders.check_all_used()?;
    let mut source = source(tables, &meta, &input.index_name).await?;
    if let Some((segment, total)) = segments {
        // An item's segment follows from its table key, so the segments split the table.
        source.items.retain(|i| segment_of(&meta, i, total) == segment);
    }
    page(source, &input, filter.as_ref(), paths.as_deref(), false)
}

fn segment_of(meta: &TableMeta, item: &Item, total: u64) -> u64 {
    let key = meta.item_key(item).unwrap_or_default();
    // FNV-1a: stable across processes and versions.
    let hash = key.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    hash % total
}

async fn query(tables: &Tables, input: ReadInput) -> Result<Value, DynamoError> {
    refuse_legacy_filters(&input)?;
    let meta = table(tables, &input.table_name).await?;
    let mut placeholders =
        Placeholders::new(input.expression_attribute_names.clone(), input.expression_attribute_values.clone())?;
    let key_condition = match (&input.key_condition_expression, &input.key_conditions) {
        (Some(text), None) => expr::parse_condition(text, "KeyConditionExpression", &mut placeholders)?,
        (None, Some(legacy)) => {
            let legacy: BTreeMap<String, expr::ExpectedValue> = serde_json::from_value(json!(legacy))
                .map_err(|e| DynamoError::validation(format!("KeyConditions could not be read: {e}")))?;
            expr::expected(&legacy, None)?.ok_or_else(|| DynamoError::validation("KeyConditions must not be empty"))?
        }
        (Some(_), Some(_)) => {
            return Err(DynamoError::validation(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {KeyConditions} Expression parameters: {KeyConditionExpression}",
            ));
        }
        (None, None) => {
            return Err(DynamoError::validation(
                "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
            ));
        }
    };
    let filter = input
        .filter_expression
        .as_deref()
        .map(|f| expr::parse_condition(f, "FilterExpression", &mut placeholders))
        .transpose()?;
    let paths = projection(&input.projection_expression, &input.attributes_to_get, &mut placeholders)?;
    placeholders.check_all_used()?;
    let schema = match &input.index_name {
        Some(name) => {
            &meta
                .indexes
                .iter()
                .find(|i| &i.name == name)
                .ok_or_else(|| DynamoError::validation(format!("The table does not have the specified index: {name}")))?
                .key_schema
        }
        None => &meta.key_schema,
    };
    check_key_condition(&key_condition, &store::key_names(schema))?;
    let mut source = source(tables, &meta, &input.index_name).await?;
    let mut kept = Vec::new();
    for item in source.items {
        if key_condition.holds(&item)? {
            kept.push(item);
        }
    }
    source.items = kept;
    page(source, &input, filter.as_ref(), paths.as_deref(), input.scan_index_forward == Some(false))
}

/// A key condition: equality on the partition key, and at most one condition on the sort key.
fn check_key_condition(condition: &Condition, keys: &[&str]) -> Result<(), DynamoError> {
    use expr::{Comparator, Operand};
    let invalid = |m: &str| DynamoError::validation(format!("Query condition missed key schema element: {m}"));
    let mut parts = Vec::new();
    fn flatten<'a>(c: &'a Condition, out: &mut Vec<&'a Condition>) -> bool {
        match c {
            Condition::And(a, b) => flatten(a, out) && flatten(b, out),
            Condition::Or(..) | Condition::Not(_) => false,
            other => {
                out.push(other);
                true
            }
        }
    }
    if !flatten(condition, &mut parts) || parts.len() > 2 {
        return Err(DynamoError::validation(
            "Invalid KeyConditionExpression: a key condition is an equality on the partition key, optionally AND one condition on the sort key",
        ));
    }
    let attribute = |c: &Condition| -> Option<String> {
        let path = match c {
            Condition::Compare(Operand::Path(p), _, _)
            | Condition::Between(Operand::Path(p), _, _)
            | Condition::BeginsWith(Operand::Path(p), _) => p,
            _ => return None,
        };
        match path.as_slice() {
            [super::value::Step::Key(k)] => Some(k.clone()),
            _ => None,
        }
    };
    let hash = keys[0];
    let on_hash = parts.iter().find(|c| attribute(c).as_deref() == Some(hash)).ok_or_else(|| invalid(hash))?;
    if !matches!(on_hash, Condition::Compare(_, Comparator::Eq, Operand::Value(_))) {
        return Err(DynamoError::validation("Query key condition not supported: the partition key takes an equality"));
    }
    for part in &parts {
        let name = attribute(part).ok_or_else(|| DynamoError::validation("Query key condition not supported"))?;
        if name != hash && keys.get(1) != Some(&name.as_str()) {
            return Err(DynamoError::validation(format!(
                "Query key condition not supported: {name} is not a key attribute"
            )));
        }
        if matches!(part, Condition::Compare(_, Comparator::Ne, _)) {
            return Err(DynamoError::validation("Unsupported operator in KeyConditionExpression: <>"));
        }
    }
    Ok(())
}

// ---- transactions ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TransactItem {
    put: Option<Value>,
    update: Option<Value>,
    delete: Option<Value>,
    condition_check: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TransactWriteItemsInput {
    transact_items: Option<Vec<TransactItem>>,
}

/// One action of a transaction, checked: its item and how it changes.
struct Action {
    meta: TableMeta,
    key: String,
    condition: Option<Condition>,
    change: Change,
}

enum Change {
    Put(Item),
    Update(Item, Update),
    Delete,
    Check,
}

/// All conditions are checked first; only if all hold are the writes made, each conditional
/// on the version its condition was checked against. Not isolated as DynamoDB's are: a
/// concurrent writer that changes an item between the checks and its write makes that write
/// (and the rest) fail with TransactionConflict, after earlier writes of the transaction.
async fn transact_write_items(tables: &Tables, input: TransactWriteItemsInput) -> Result<Value, DynamoError> {
    let items = input.transact_items.unwrap_or_default();
    if items.is_empty() || items.len() > 100 {
        return Err(DynamoError::validation(format!(
            "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must have length between 1 and 100 (it has {})",
            items.len()
        )));
    }
    let mut actions = Vec::new();
    for item in items {
        let (body, kind) = match (item.put, item.update, item.delete, item.condition_check) {
            (Some(b), None, None, None) => (b, "Put"),
            (None, Some(b), None, None) => (b, "Update"),
            (None, None, Some(b), None) => (b, "Delete"),
            (None, None, None, Some(b)) => (b, "ConditionCheck"),
            _ => {
                return Err(DynamoError::validation(
                    "Each TransactItem must have exactly one of Put, Update, Delete or ConditionCheck",
                ));
            }
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            table_name: Option<String>,
            item: Option<Item>,
            key: Option<Item>,
            update_expression: Option<String>,
            condition_expression: Option<String>,
            expression_attribute_names: Option<BTreeMap<String, String>>,
            expression_attribute_values: Option<BTreeMap<String, AttributeValue>>,
        }
        let body: Body =
            serde_json::from_value(body).map_err(|e| DynamoError::serialization(format!("{kind}: {e}")))?;
        let meta = table(tables, &body.table_name).await?;
        let mut placeholders = Placeholders::new(body.expression_attribute_names, body.expression_attribute_values)?;
        let condition = body
            .condition_expression
            .as_deref()
            .map(|c| expr::parse_condition(c, "ConditionExpression", &mut placeholders))
            .transpose()?;
        let (key, change) = match kind {
            "Put" => {
                let item = body.item.ok_or_else(|| DynamoError::validation("Put: Item must be given"))?;
                (check_item(&meta, &item)?, Change::Put(item))
            }
            "Update" => {
                let key = body.key.ok_or_else(|| DynamoError::validation("Update: Key must be given"))?;
                let text = body
                    .update_expression
                    .ok_or_else(|| DynamoError::validation("Update: UpdateExpression must be given"))?;
                (meta.check_key(&key)?, Change::Update(key, expr::parse_update(&text, &mut placeholders)?))
            }
            _ => {
                let key = body.key.ok_or_else(|| DynamoError::validation(format!("{kind}: Key must be given")))?;
                if kind == "ConditionCheck" && condition.is_none() {
                    return Err(DynamoError::validation("ConditionCheck: ConditionExpression must be given"));
                }
                (meta.check_key(&key)?, if kind == "Delete" { Change::Delete } else { Change::Check })
            }
        };
        placeholders.check_all_used()?;
        if actions.iter().any(|a: &Action| a.meta.name == meta.name && a.key == key) {
            return Err(DynamoError::validation("Transaction request cannot include multiple operations on one item"));
        }
        actions.push(Action { meta, key, condition, change });
    }
    let mut slots = Vec::new();
    let mut reasons = Vec::new();
    let mut failed = false;
    for action in &actions {
        let slot = tables.read(&action.meta, &action.key).await?;
        let holds = match &action.condition {
            Some(c) => c.holds(&slot.item.clone().unwrap_or_default())?,
            None => true,
        };
        failed |= !holds;
        reasons.push(if holds {
            json!({"Code": "None"})
        } else {
            json!({"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"})
        });
        slots.push(slot);
    }
    if failed {
        let codes: Vec<&str> = reasons.iter().map(|r| r["Code"].as_str().unwrap_or("None")).collect();
        let mut e = DynamoError::new_transaction_canceled(format!(
            "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
            codes.join(", ")
        ));
        e.cancellation_reasons = Some(reasons);
        return Err(e);
    }
    for (action, slot) in actions.iter().zip(&slots) {
        let next = match &action.change {
            Change::Put(item) => Some(item.clone()),
            Change::Update(key, update) => {
                let base = slot.item.clone().unwrap_or_else(|| key.clone());
                let (next, _) = update.apply(&base, &action.meta.key_names())?;
                check_item(&action.meta, &next)?;
                Some(next)
            }
            Change::Delete => None,
            Change::Check => continue,
        };
        if !tables.write(&action.meta, &action.key, slot, next.as_ref()).await? {
            return Err(DynamoError::new_transaction_canceled(
                "Transaction cancelled: an item changed while the transaction was written [TransactionConflict]",
            ));
        }
    }
    Ok(json!({}))
}

impl DynamoError {
    fn new_transaction_canceled(message: impl Into<String>) -> DynamoError {
        DynamoError {
            code: "TransactionCanceledException",
            message: message.into(),
            item: None,
            cancellation_reasons: None,
        }
    }
}

// ---- backups ----

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BackupsInput {
    table_name: Option<String>,
    point_in_time_recovery_specification: Option<Value>,
}

/// Answered so that clients that turn point-in-time recovery on go on; the items are as
/// durable as the object store keeps them, and there is nothing else to restore from.
async fn continuous_backups(tables: &Tables, input: BackupsInput) -> Result<Value, DynamoError> {
    table(tables, &input.table_name).await?;
    let enabled =
        input.point_in_time_recovery_specification.as_ref().is_some_and(|s| s["PointInTimeRecoveryEnabled"] == true);
    Ok(json!({ "ContinuousBackupsDescription": {
        "ContinuousBackupsStatus": "ENABLED",
        "PointInTimeRecoveryDescription": {"PointInTimeRecoveryStatus": if enabled { "ENABLED" } else { "DISABLED" }},
    }}))
}
