//! Access control: whether the sender of a request may do its action on its resource.
//!
//! Two kinds of policy apply, as in AWS: the broker's access policy (`--access-policy`, the
//! statements for every key; the operator writes it from a DataStream's spec) and the
//! resource policy kept with the stream or consumer (PutResourcePolicy). An explicit Deny in
//! either refuses; otherwise an Allow in either permits. Without an access policy file every
//! authenticated key is allowed what no resource policy denies (the broker's behaviour
//! before policies existed). A request forwarded by a peer was checked where it arrived.

use crate::auth::Principal;
use crate::broker::Broker;
use crate::tokens::PageKind;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use streamfabric_api::names::{parse_consumer_arn, stream_name_from_arn};
use streamfabric_api::policy::{Decision, Policy, Resource, Subject};
use streamfabric_api::{ApiError, ErrorCode, Format};

pub struct Access {
    source: Option<PathBuf>,
    policy: RwLock<Option<Arc<Policy>>>,
    /// Refusals per action (bounded: one series per operation).
    denied: IntCounterVec,
}

impl Access {
    /// Reads the access policy (if any); an unreadable or invalid one stops the start.
    pub fn new(source: Option<&Path>, registry: &Registry) -> std::io::Result<Access> {
        let denied = IntCounterVec::new(
            Opts::new("streamfabric_access_denied_total", "Requests refused by access control, per action."),
            &["action"],
        )
        .expect("valid metric");
        registry.register(Box::new(denied.clone())).expect("metric registered once");
        let policy = match source {
            Some(path) => {
                let policy = read_policy(path)?;
                tracing::info!(policy = %path.display(), "access policy applied to every request");
                Some(Arc::new(policy))
            }
            None => None,
        };
        Ok(Access { source: source.map(Path::to_path_buf), policy: RwLock::new(policy), denied })
    }

    /// Re-read the policy every few seconds; one that does not read keeps the one in use.
    pub fn watch(self: &Arc<Self>) {
        if self.source.is_some() {
            crate::reload::every_few_seconds(self, Access::reload_if_changed);
        }
    }

    pub fn reload_if_changed(&self) {
        let Some(source) = &self.source else { return };
        match read_policy(source) {
            Ok(policy) if self.policy.read().unwrap().as_deref() == Some(&policy) => {}
            Ok(policy) => {
                *self.policy.write().unwrap() = Some(Arc::new(policy));
                tracing::info!(policy = %source.display(), "access policy reloaded");
            }
            Err(e) => {
                tracing::error!(policy = %source.display(), "access policy not reloaded, the previous one stays: {e}")
            }
        }
    }

    fn current(&self) -> Option<Arc<Policy>> {
        self.policy.read().unwrap().clone()
    }
}

fn read_policy(path: &Path) -> std::io::Result<Policy> {
    let text = std::fs::read_to_string(path)?;
    Policy::parse(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))
}

/// The members of a request body that name what it acts on; the rest is skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Named {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ConsumerARN")]
    consumer_arn: Option<String>,
    consumer_name: Option<String>,
    #[serde(rename = "ResourceARN")]
    resource_arn: Option<String>,
    shard_iterator: Option<String>,
    next_token: Option<String>,
    table_name: Option<String>,
}

/// What a request acts on, as policies see it.
struct Target {
    /// The resource's ARN as this broker forms it (whatever region or account the request
    /// wrote), or `*` for account-wide operations.
    arn: String,
    /// The stream or table name that name patterns are matched against.
    name: Option<String>,
    /// The resource policy kept with the stream or consumer, if any.
    resource_policy: Option<String>,
}

impl Broker {
    /// Whether `principal` may do `action` (`kinesis:PutRecord`, `dynamodb:GetItem`, ...)
    /// on what the request body names; AccessDeniedException naming both if not.
    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        action: &str,
        format: Format,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let identity = self.access.current();
        if *principal == Principal::Peer || (!self.auth.required() && identity.is_none()) {
            return Ok(());
        }
        let named = format.decode::<Named>(body).unwrap_or_default();
        let target = self.target_of(&named, action);
        let (key, groups) = match principal {
            Principal::AccessKey { id, groups } => (Some(id.as_str()), groups.as_slice()),
            _ => (None, &[][..]),
        };
        let subject = Subject { access_key_id: key, groups, account: &self.config.account };
        let resource = Resource { arn: &target.arn, name: target.name.as_deref() };
        // Without an access policy, what no resource policy denies is allowed.
        let mut allowed = identity.is_none();
        let mut denied_by = None;
        if let Some(policy) = &identity {
            match policy.decide(&subject, action, &resource) {
                Decision::Allow => allowed = true,
                Decision::Deny(sid) => denied_by = Some(("the broker's access policy", sid)),
                Decision::NotAllowed => {}
            }
        }
        let attached = target.resource_policy.as_deref().and_then(|text| Policy::parse(text).ok());
        if denied_by.is_none()
            && let Some(policy) = attached
        {
            match policy.decide(&subject, action, &resource) {
                Decision::Allow => allowed = true,
                Decision::Deny(sid) => denied_by = Some(("the resource's policy", sid)),
                Decision::NotAllowed => {}
            }
        }
        if denied_by.is_none() && allowed {
            return Ok(());
        }
        self.access.denied.with_label_values(&[action]).inc();
        let who = key.unwrap_or("anonymous");
        let why = match denied_by {
            Some((place, Some(sid))) => format!("with an explicit deny in {place} (statement {sid})"),
            Some((place, None)) => format!("with an explicit deny in {place}"),
            None => format!("because no policy allows the {action} action"),
        };
        Err(ApiError::new(
            ErrorCode::AccessDenied,
            format!("User: {who} is not authorized to perform: {action} on resource: {} {why}", target.arn),
        ))
    }

    fn target_of(&self, named: &Named, action: &str) -> Target {
        let account_wide = || Target { arn: "*".into(), name: None, resource_policy: None };
        if action.starts_with("dynamodb:") {
            return match &named.table_name {
                Some(table) => Target {
                    arn: format!("arn:aws:dynamodb:{}:{}:table/{table}", self.config.region, self.config.account),
                    name: Some(table.clone()),
                    resource_policy: None,
                },
                None => account_wide(),
            };
        }
        let consumer_arn =
            named.consumer_arn.as_deref().or(named.resource_arn.as_deref().filter(|a| a.contains("/consumer/")));
        if let Some(Ok((stream, consumer, seconds))) = consumer_arn.map(parse_consumer_arn) {
            return self.consumer_target(stream, consumer, Some(seconds));
        }
        let arn = named.stream_arn.as_deref().or(named.resource_arn.as_deref());
        let stream = match (arn.map(stream_name_from_arn), &named.stream_name) {
            (Some(Ok(name)), _) => Some(name.to_string()),
            (_, Some(name)) => Some(name.clone()),
            _ => None,
        };
        let stream = stream.or_else(|| self.stream_of_token(named));
        // DescribeStreamConsumer and DeregisterStreamConsumer may name a consumer by its
        // stream and name (RegisterStreamConsumer's resource is the stream).
        let of_consumer = matches!(action, "kinesis:DescribeStreamConsumer" | "kinesis:DeregisterStreamConsumer");
        match (stream, &named.consumer_name) {
            (Some(stream), Some(consumer)) if of_consumer => self.consumer_target(&stream, consumer, None),
            (Some(stream), _) => Target {
                arn: self.arn(&stream),
                resource_policy: self.catalog.get(&stream).and_then(|s| s.with_meta(|m| m.resource_policy.clone())),
                name: Some(stream),
            },
            (None, _) => account_wide(),
        }
    }

    /// The stream a GetRecords iterator or a ListShards NextToken reads, whatever its age
    /// (an expired one is the operation's to refuse, with its own error).
    fn stream_of_token(&self, named: &Named) -> Option<String> {
        if let Some(iterator) = &named.shard_iterator {
            return self.signer.open_iterator(iterator).ok().map(|it| it.stream);
        }
        let (_, page) = self.signer.open_page(named.next_token.as_deref()?, PageKind::Shards).ok()?;
        // A ListShards page is scoped to `<stream>/<incarnation>`.
        page.scope.rsplit_once('/').map(|(stream, _)| stream.to_string())
    }

    fn consumer_target(&self, stream: &str, consumer: &str, seconds: Option<i64>) -> Target {
        let registered = self.catalog.get(stream).and_then(|s| {
            s.with_meta(|m| {
                m.consumers
                    .iter()
                    .find(|c| c.name == consumer && seconds.is_none_or(|secs| secs == c.created_ms / 1000))
                    .map(|c| (c.created_ms / 1000, c.resource_policy.clone()))
            })
        });
        let seconds = seconds.or(registered.as_ref().map(|(secs, _)| *secs)).unwrap_or(0);
        Target {
            arn: format!("{}/consumer/{consumer}:{seconds}", self.arn(stream)),
            name: Some(stream.to_string()),
            resource_policy: registered.and_then(|(_, policy)| policy),
        }
    }
}
