//! Tables and items in the object store, beside the streams:
//! `<prefix>/dynamodb/tables/<table>/table.json` (the description) and
//! `<prefix>/dynamodb/tables/<table>/<table id>/items/<key>.json` (one object per item, its
//! key's type and bytes in hex). Every change is one conditional PUT (create-if-absent, or
//! ETag match), so two brokers writing one item never both win; a deleted item leaves a
//! tombstone (the store has no conditional delete) until its table is deleted. The table id
//! keeps a recreated table apart from what its predecessor left.

use super::DynamoError;
use super::value::{AttributeValue, Item, Number};
use crate::tier::TierStore;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct KeySchemaElement {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinition {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Projection {
    pub projection_type: Option<String>,
    pub non_key_attributes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Throughput {
    pub read_capacity_units: i64,
    pub write_capacity_units: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    pub name: String,
    pub key_schema: Vec<KeySchemaElement>,
    pub projection: Projection,
    pub throughput: Option<Throughput>,
}

/// A table's description, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    pub name: String,
    pub id: String,
    pub created_ms: i64,
    pub key_schema: Vec<KeySchemaElement>,
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub billing_mode: String,
    pub throughput: Option<Throughput>,
    #[serde(default)]
    pub indexes: Vec<IndexMeta>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub deletion_protection: bool,
}

impl TableMeta {
    /// The table's key attributes: hash, then range if any.
    pub fn key_names(&self) -> Vec<&str> {
        key_names(&self.key_schema)
    }

    pub fn attribute_type(&self, name: &str) -> Option<&str> {
        self.attribute_definitions.iter().find(|d| d.attribute_name == name).map(|d| d.attribute_type.as_str())
    }

    /// The object name of the item with this key (`Key` of a request, or a whole item).
    pub fn item_key(&self, item: &Item) -> Result<String, DynamoError> {
        let mut parts = Vec::new();
        for name in self.key_names() {
            let value = item.get(name).ok_or_else(|| {
                DynamoError::validation(format!(
                    "One or more parameter values were invalid: Missing the key {name} in the item"
                ))
            })?;
            let want = self.attribute_type(name).unwrap_or("S");
            let bytes = match (want, value) {
                ("S", AttributeValue::S(s)) => s.as_bytes().to_vec(),
                ("N", AttributeValue::N(n)) => Number::parse(n)?.canonical().into_bytes(),
                ("B", AttributeValue::B(b)) => b.0.to_vec(),
                _ => {
                    return Err(DynamoError::validation(format!(
                        "One or more parameter values were invalid: Type mismatch for key {name} expected: {want} actual: {}",
                        value.type_name()
                    )));
                }
            };
            if bytes.is_empty() {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty {want} value. Key: {name}"
                )));
            }
            parts.push(format!("{}{}", want.to_ascii_lowercase(), hex(&bytes)));
        }
        Ok(parts.join("~"))
    }

    /// The key attributes of `item`.
    pub fn key_of(&self, item: &Item) -> Item {
        self.key_names().into_iter().filter_map(|k| Some((k.to_string(), item.get(k)?.clone()))).collect()
    }

    /// A request's `Key`: exactly the key attributes.
    pub fn check_key(&self, key: &Item) -> Result<String, DynamoError> {
        let names = self.key_names();
        if key.len() != names.len() || !names.iter().all(|n| key.contains_key(*n)) {
            return Err(DynamoError::validation("The provided key element does not match the schema"));
        }
        self.item_key(key).map_err(|_| DynamoError::validation("The provided key element does not match the schema"))
    }
}

pub fn key_names(schema: &[KeySchemaElement]) -> Vec<&str> {
    let mut names: Vec<&KeySchemaElement> = schema.iter().collect();
    names.sort_by_key(|k| k.key_type != "HASH");
    names.into_iter().map(|k| k.attribute_name.as_str()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An item as read, with the version to write it back at (None: never written).
pub struct Slot {
    pub item: Option<Item>,
    pub version: Option<UpdateVersion>,
}

/// An item's object: the item, or a tombstone.
#[derive(Serialize, Deserialize)]
struct StoredItem {
    item: Option<Item>,
}

/// Handle on the tables under one prefix. Cheap to clone.
#[derive(Clone)]
pub struct Tables {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

fn store_error(what: &str, path: &Path, e: object_store::Error) -> DynamoError {
    tracing::warn!("dynamodb tables: {what} {path}: {e}");
    DynamoError::internal(format!("The table store could not be reached ({what} {path}); retry."))
}

impl Tables {
    pub fn new(tier: &TierStore) -> Tables {
        Tables { store: tier.store().clone(), root: crate::tier::join(tier.prefix(), "dynamodb/tables") }
    }

    fn meta_path(&self, table: &str) -> Path {
        self.root.clone().join(table).join("table.json")
    }

    fn items_dir(&self, meta: &TableMeta) -> Path {
        self.root.clone().join(meta.name.as_str()).join(meta.id.as_str()).join("items")
    }

    pub async fn create(&self, meta: &TableMeta) -> Result<(), DynamoError> {
        let path = self.meta_path(&meta.name);
        let body = serde_json::to_vec_pretty(meta).expect("table descriptions serialise");
        match self.store.put_opts(&path, PutPayload::from(body), PutMode::Create.into()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(DynamoError::in_use(format!("Table already exists: {}", meta.name)))
            }
            Err(e) => Err(store_error("create", &path, e)),
        }
    }

    /// A table's description and its version; None if there is no such table.
    pub async fn get(&self, table: &str) -> Result<Option<(TableMeta, UpdateVersion)>, DynamoError> {
        let path = self.meta_path(table);
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("get", &path, e)),
        };
        let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
        let bytes = got.bytes().await.map_err(|e| store_error("get", &path, e))?;
        let meta = serde_json::from_slice(&bytes)
            .map_err(|e| DynamoError::internal(format!("The description of table {table} is damaged: {e}")))?;
        Ok(Some((meta, version)))
    }

    /// Change a table's description with `change`, retried from a fresh read if another
    /// writer changed it meanwhile.
    pub async fn update(
        &self,
        table: &str,
        mut change: impl FnMut(&mut TableMeta) -> Result<(), DynamoError>,
    ) -> Result<TableMeta, DynamoError> {
        let path = self.meta_path(table);
        for _ in 0..10 {
            let (mut meta, version) = self.get(table).await?.ok_or_else(|| not_found(table))?;
            change(&mut meta)?;
            let body = serde_json::to_vec_pretty(&meta).expect("table descriptions serialise");
            match self.store.put_opts(&path, PutPayload::from(body), PutMode::Update(version).into()).await {
                Ok(_) => return Ok(meta),
                Err(e) if crate::tier::versioned::is_conflict(&e) => continue,
                Err(e) => return Err(store_error("update", &path, e)),
            }
        }
        Err(DynamoError::internal(format!("Table {table} kept changing under this update; retry.")))
    }

    /// Remove a table: its description at once (it is gone), then its items.
    pub async fn delete(&self, meta: &TableMeta) -> Result<(), DynamoError> {
        let path = self.meta_path(&meta.name);
        self.store.delete(&path).await.map_err(|e| store_error("delete", &path, e))?;
        let (tables, dir) = (self.clone(), self.items_dir(meta));
        tokio::spawn(async move {
            let listed = tables.store.list(Some(&dir)).map_ok(|m| m.location).boxed();
            if let Err(e) = tables.store.delete_stream(listed).try_collect::<Vec<_>>().await {
                tracing::warn!("deleting the items under {dir}: {e}");
            }
        });
        Ok(())
    }

    pub async fn names(&self) -> Result<Vec<String>, DynamoError> {
        let listed = self.store.list_with_delimiter(Some(&self.root)).await;
        let listed = match listed {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(store_error("list", &self.root, e)),
        };
        let mut names: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        // A table whose description is gone is being deleted.
        let described = futures::stream::iter(names)
            .map(|name| async move { Ok::<_, DynamoError>(self.get(&name).await?.map(|_| name)) })
            .buffered(16)
            .try_filter_map(|n| async move { Ok(n) });
        described.try_collect().await
    }

    pub async fn read(&self, meta: &TableMeta, key: &str) -> Result<Slot, DynamoError> {
        let path = self.items_dir(meta).join(format!("{key}.json"));
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(Slot { item: None, version: None }),
            Err(e) => return Err(store_error("get", &path, e)),
        };
        let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
        let bytes = got.bytes().await.map_err(|e| store_error("get", &path, e))?;
        let stored: StoredItem = serde_json::from_slice(&bytes)
            .map_err(|e| DynamoError::internal(format!("An item of table {} is damaged ({path}): {e}", meta.name)))?;
        Ok(Slot { item: stored.item, version: Some(version) })
    }

    /// Write `item` (None: delete it) where `slot` was read. False if another writer
    /// changed it since: read again and retry.
    pub async fn write(
        &self,
        meta: &TableMeta,
        key: &str,
        slot: &Slot,
        item: Option<&Item>,
    ) -> Result<bool, DynamoError> {
        let path = self.items_dir(meta).join(format!("{key}.json"));
        if item.is_none() && slot.item.is_none() {
            return Ok(true);
        }
        #[derive(Serialize)]
        struct Stored<'a> {
            item: Option<&'a Item>,
        }
        let body = serde_json::to_vec(&Stored { item }).expect("items serialise");
        let mode = match &slot.version {
            Some(v) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        };
        match self.store.put_opts(&path, PutPayload::from(body), mode.into()).await {
            Ok(_) => Ok(true),
            Err(e) if crate::tier::versioned::is_conflict(&e) => Ok(false),
            Err(e) => Err(store_error("put", &path, e)),
        }
    }

    /// Every item of the table, ordered by key.
    pub async fn all(&self, meta: &TableMeta) -> Result<Vec<(String, Item)>, DynamoError> {
        let dir = self.items_dir(meta);
        let metas: Vec<_> = match self.store.list(Some(&dir)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(store_error("list", &dir, e)),
        };
        let keys: Vec<String> = metas
            .into_iter()
            .filter_map(|m| m.location.filename().and_then(|f| f.strip_suffix(".json")).map(str::to_string))
            .collect();
        let mut items: Vec<(String, Item)> = futures::stream::iter(keys)
            .map(|key| async move { Ok::<_, DynamoError>(self.read(meta, &key).await?.item.map(|i| (key, i))) })
            .buffer_unordered(16)
            .try_filter_map(|i| async move { Ok(i) })
            .try_collect()
            .await?;
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(items)
    }
}

pub fn not_found(table: &str) -> DynamoError {
    DynamoError::not_found(format!("Requested resource not found: Table: {table} not found"))
}
